"""Netlink shared by the services: `rtnl`, the fast read-only rtnetlink reader (dumps and events).

Discovery reads the node through it, and the netns worker's dumps use its parser; the worker
writes with pyroute2's message classes (services/netns/netlink.py).
"""
