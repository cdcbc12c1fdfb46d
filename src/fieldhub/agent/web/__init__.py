"""The agent's technician page: a small local web page behind a local password.

See ``app.py`` for the routes and their protection, ``view.py`` for what the agent provides,
and ``http.py`` for why it runs on h11 rather than uvicorn.
"""

from fieldhub.agent.web.app import TechnicianPage, parse_listen
from fieldhub.agent.web.auth import WeakPassword, hash_password
from fieldhub.agent.web.view import AgentView, UnitView

__all__ = [
    "AgentView",
    "TechnicianPage",
    "UnitView",
    "WeakPassword",
    "hash_password",
    "parse_listen",
]
