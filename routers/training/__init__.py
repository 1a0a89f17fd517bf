"""Offline jobs on a deployment's own labels: adapt the router, compare routers, recommend an operating point."""
