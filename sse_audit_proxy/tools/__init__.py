"""Tools around the product: demo (+ live view), demo gateway, traffic, probe, bench, cases.

Tools use the product; the product never imports a tool.
"""
