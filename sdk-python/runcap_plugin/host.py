"""The host that capability calls go to: runcap's imports inside a component (installed by
`runcap_plugin._component`), a `runcap_plugin.testing.MockHost` in unit tests.

A host has two methods:

    log(level, message, fields)   level is "debug", "info", "warn" or "error";
                                  fields a list of (str, str)
    http(request)                 takes a runcap_plugin.http.Request, returns a
                                  runcap_plugin.http.Response or raises HttpError
"""

import contextlib

_hosts = []


def current():
    """The innermost installed host."""
    if not _hosts:
        raise RuntimeError(
            "runcap_plugin has no host here: a plugin's capabilities work inside runcap, "
            "and in unit tests through runcap_plugin.testing.MockHost"
        )
    return _hosts[-1]


def install(host):
    """Makes `host` the current host until `uninstall(host)`."""
    _hosts.append(host)


def uninstall(host):
    for i in range(len(_hosts) - 1, -1, -1):
        if _hosts[i] is host:
            del _hosts[i]
            return


@contextlib.contextmanager
def using(host):
    """`with using(host):` makes `host` current inside the block."""
    install(host)
    try:
        yield host
    finally:
        uninstall(host)
