from django.urls import path

from profiles.apis import EventApi, ProfileApi

urlpatterns = [
    path("events", EventApi.as_view(), name="events"),
    path("profiles/<id:user_id>", ProfileApi.as_view(), name="profile"),
]
