"""The bottom layer: the clock, logging and redaction, event waits, hook sets, the error tree.

Everything else imports from here; this folder imports nothing of the package.
"""
