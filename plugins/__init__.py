"""First-party tlbench plugins: written only against tlbench's public API (``tlbench.__all__``)."""
