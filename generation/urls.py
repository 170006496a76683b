from django.urls import path

from generation.apis import GenerateApi

urlpatterns = [path("generate", GenerateApi.as_view(), name="generate")]
