"""Staff pages of the office (namespace "office")."""

from django.urls import path

from office import views

app_name = "office"

urlpatterns = [
    path("", views.home, name="home"),
    path("tasks/", views.task_list, name="task_list"),
    path("tasks/new/", views.task_create, name="task_create"),
    path("tasks/<int:task_id>/", views.task_detail, name="task_detail"),
    path("tasks/<int:task_id>/status/", views.task_status, name="task_status"),
]
