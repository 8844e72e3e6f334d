"""Server command plugins loaded by the daemon in tests ([server] handlers)."""


def _explode(hub, sender, payload):
    raise RuntimeError("explode: a handler bug, on purpose")


def _echo(hub, sender, payload):
    return payload


def register(hub):
    hub.register_command("explode", _explode)
    hub.register_command("echo", _echo)
