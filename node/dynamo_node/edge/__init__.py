"""The HTTP edge: the strict HTTP/1.1 server, the key-value and admin API, the OpenAPI
document and metrics.
"""
