"""Template tags for spec-then-execute tasks: the links between a task and its steps."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import template

from office.models import Task, TaskKind

register = template.Library()


@register.inclusion_tag("office/_task_workflow.html")
def task_workflow(task: Task) -> dict[str, Any]:
    """A spec-then-execute task's steps with their totals, or a step's link to its task
    (nothing for a plain task)."""
    steps: list[Task] = []
    if task.kind == TaskKind.SPEC_EXECUTE:
        # The task selectors prefetch the steps in order with their roles.
        steps = list(task.steps.all())
    return {
        "task": task,
        "steps": steps,
        # Each step is billed on its own; their sum is what the whole task cost.
        "steps_cost": sum((step.cost for step in steps), Decimal(0)),
        "steps_calls": sum(step.provider_calls for step in steps),
    }
