"""Steering: interventions on SAE features at the SAE's layer of the full model, and their measurements.

``personamine.steer(...)`` (in ``personamine.jobs.steer``) is the entry point; this package holds its parts: the SAE
rows it needs (``sae_access``), what an intervention is (``interventions``), the hooks that apply one
(``hooks``), generation and measurements (``generate``, ``measure``), the run (``run``) and the file (``hdf5``).

The package is not called ``steer``: importing a subpackage binds it as an attribute of its parent, so
``personamine.steer`` would stop being the function the first time any of these modules was imported.
"""
