"""The admin's start form. It only turns the fields into Python values: what
makes a run valid is checked by ``services.run_create``, whose errors the view
puts back on the field they name."""

from __future__ import annotations

from django import forms

from policies.selectors import policy_list
from simulations import services


def _number(**attrs) -> forms.NumberInput:
    return forms.NumberInput(attrs={"class": "vIntegerField", **attrs})


class RunStartForm(forms.Form):
    policies = forms.MultipleChoiceField(
        widget=forms.CheckboxSelectMultiple,
        required=False,  # run_create says how many a run takes
        help_text="Compared on the same users, tasks and reactions, in this order.",
    )
    judge = forms.ChoiceField(help_text="How the simulated users react to a tip.")
    n_users = forms.IntegerField(
        label="Users",
        initial=1_000,
        widget=_number(min=1),
        help_text="Personas are assigned round-robin.",
    )
    n_rounds = forms.IntegerField(
        label="Rounds", initial=100, widget=_number(min=1), help_text="Tips per user."
    )
    seed = forms.IntegerField(
        initial=42,
        widget=_number(min=0),
        help_text="The same seed gives the same results, to the bit.",
    )
    n_candidates = forms.IntegerField(
        label="Candidates",
        initial=5,
        widget=_number(min=1),
        help_text="Tasks to choose from each round.",
    )
    chunk_users = forms.IntegerField(
        label="Users per chunk",
        required=False,
        widget=_number(min=1, placeholder="chosen"),
        help_text="Each chunk is one task for a worker. Left empty, chosen from the "
        "run's size so that the progress moves every second or two. With the rule "
        "judge the results do not depend on it.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["policies"].choices = [
            (p.name, f"{p.name} ({p.get_role_display().lower()}, D={p.dimension})")
            for p in policy_list()
        ]
        self.fields["judge"].choices = [
            (name, name if services.judge_off_reason(name) is None else f"{name} (off)")
            for name in services.judge_names()
        ]
        off = services.judge_off_reason(services.LLM_JUDGE)
        if off:  # say why before anyone picks it (run_create refuses it too)
            self.fields["judge"].help_text += f" The llm judge is off. {off}"
