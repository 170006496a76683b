from django.contrib import admin
from django.urls import include, path, register_converter
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from oo_ml.apis import HealthApi
from oo_ml.converters import IdConverter
from oo_ml.views import favicon, home
from policies.admin import control_room
from simulations.admin import simulations_home

# <id:…> in the apps' routes: before their urls are included below.
register_converter(IdConverter, "id")

admin.site.site_header = "oo_ml administration"
admin.site.site_title = "oo_ml admin"

handler404 = "oo_ml.errors.page_not_found"
handler500 = "oo_ml.errors.server_error"

urlpatterns = [
    path("", home, name="home"),
    path("favicon.ico", favicon, name="favicon"),
    # The policies app's admin index is its control room (before the admin's own).
    path(
        "admin/policies/",
        admin.site.admin_view(control_room),
        name="policies-control-room",
    ),
    # Likewise, the simulations app's admin index starts runs and follows them.
    path(
        "admin/simulations/",
        admin.site.admin_view(simulations_home),
        name="simulations-home",
    ),
    path("admin/", admin.site.urls),
    path("health", HealthApi.as_view(), name="health"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("", include("policies.urls")),
    path("", include("profiles.urls")),
    path("", include("simulations.urls")),
    path("", include("generation.urls")),
]
