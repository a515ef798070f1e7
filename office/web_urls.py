"""Staff pages of the office (namespace "office"). The site root, the office overview,
is agents' (agents/overview_urls.py): it shows what agents and billing know."""

from django.urls import path

from office import views

app_name = "office"

urlpatterns = [
    path("tasks/", views.task_list, name="task_list"),
    path("tasks/new/", views.task_create, name="task_create"),
    path("tasks/<int:task_id>/", views.task_detail, name="task_detail"),
    path("tasks/<int:task_id>/status/", views.task_status, name="task_status"),
    path("tasks/<int:task_id>/cancel/", views.task_cancel_view, name="task_cancel"),
    path("tasks/<int:task_id>/retry/", views.task_retry_view, name="task_retry"),
]
