"""Manager report pages (namespace "billing"), mounted under /billing/."""

from django.urls import path

from billing import budget_views, views

app_name = "billing"

urlpatterns = [
    path("reports/", views.report_month, name="reports"),
    path("reports/export.csv", views.report_export, name="report_export"),
    path("budgets/", budget_views.budgets_overview, name="budgets"),
]
