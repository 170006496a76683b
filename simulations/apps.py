from django.apps import AppConfig


class SimulationsConfig(AppConfig):
    name = "simulations"
    verbose_name = "Simulations"

    def ready(self) -> None:
        # The promotion gate's evidence is a simulation run: hand it over, so
        # that policies, the lower app, never imports this one.
        from policies import gate
        from simulations import charts, selectors

        gate.evidence_source_register(
            gate.EvidenceSource(
                evidence_for=selectors.promotion_evidence,
                interval_chart=charts.interval_chart,
            )
        )
