from django import template

register = template.Library()


@register.filter
def thousands(value) -> str:
    """1234567 → "1,234,567" (without django.contrib.humanize)."""
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return str(value)


@register.filter
def signed(value, digits=4) -> str:
    """0.0123 → "+0.0123", -0.5 → "−0.5000": a difference shows its sign."""
    try:
        text = f"{float(value):+.{int(digits)}f}"
    except (TypeError, ValueError):
        return str(value)
    return text.replace("-", "\u2212")
