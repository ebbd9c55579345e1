"""``rlhf serve``: the labeling app (and the dashboard of runs) under uvicorn."""

from __future__ import annotations

import warnings

from rlhf.config.labeling import ServeConfig
from rlhf.errors import UserError

CONFIG_CLASS = ServeConfig
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def run(config: ServeConfig) -> None:
    try:
        import uvicorn

        from rlhf.app.server import create_app
    except ImportError as err:
        raise UserError(f"rlhf serve needs the web extra ({err.name} is missing): pip install 'rlhf[app]'") from err
    if config.host not in LOOPBACK:
        warnings.warn(f"serving on {config.host}: anyone who can reach this machine on port {config.port} can reach "
                      "the app (tokens protect it; use HTTPS through a reverse proxy beyond a trusted network)")
    app = create_app(config.db, config.runs or None)
    print(f"rlhf serve: http://{config.host}:{config.port}/ (labelers open their /l/<token> link; admin /a/<token>)")
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning")
