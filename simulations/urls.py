from django.urls import path

from simulations.apis import SimulationApi, SimulationsApi

urlpatterns = [
    path("api/simulations", SimulationsApi.as_view(), name="simulations"),
    path("api/simulations/<str:run_id>", SimulationApi.as_view(), name="simulation"),
]
