"""Planning pages under /billing/: the cost calculator and what-if re-pricing."""

from django.urls import path

from billing import planning_views

app_name = "planning"

urlpatterns = [
    path("calculator/", planning_views.calculator, name="calculator"),
    path("calculator/row/", planning_views.calculator_row, name="calculator_row"),
    path("calculator/apply/", planning_views.calculator_apply, name="calculator_apply"),
    path("whatif/", planning_views.whatif, name="whatif"),
]
