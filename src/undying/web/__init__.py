"""The web UI (``undying ui``; needs ``pip install 'undying[ui]'``).

Server-rendered pages (Starlette, Jinja) with a vendored htmx and server-sent events, built
on the store's read side (``store.base.ReadSide``) for everything it shows and on the App
client API for what it does. Nothing here is imported by ``import undying``.

``routes.create_app`` builds the ASGI application, ``server.serve`` runs it, ``security``
holds the access rules, ``views``/``timeline``/``values`` turn stored records into what the
pages show, and ``live`` keeps open pages current.
"""
