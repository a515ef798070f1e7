"""Root URLs: the admin, Django's auth views, the task API and the staff pages."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/", include("office.api.urls")),
    path("", include("office.web_urls")),
]
