"""The web pages served beside the SOAP endpoint: the public help page (and, later, the console).

Nothing here is imported by :mod:`provider.soap`; :mod:`provider.app` routes to it.
"""
