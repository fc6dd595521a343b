"""Pure helpers shared by every resource's pipeline: no I/O, no clock, no network.

Everything here takes data and returns data, so it is unit-tested without a cluster; the
import-linter contract in .importlinter keeps it that way.
"""
