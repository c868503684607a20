"""The admin web page (issue 18): live numbers, channels and their parameters, the character library, the audit
log. It sits at the adapters' level and speaks to the bot only through `bot.commands.admin`."""
from bot.dashboard.server import Dashboard, DashboardError

__all__ = ["Dashboard", "DashboardError"]
