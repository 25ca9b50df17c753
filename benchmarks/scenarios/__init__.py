"""Benchmark scenarios; importing a module registers its scenario and its peer implementations.

Modules are imported in this order, which is also the report order.
"""

SCENARIO_MODULES = (
    "scenarios.a_full_read",
    "scenarios.r_http",
    "scenarios.b_combine",
    "scenarios.b_scale",
    "scenarios.c_many_refs",
    "scenarios.c100k_reads",
    "scenarios.c1m_reads",
    "scenarios.f_from_arrays",
    "scenarios.random_reads",
)
