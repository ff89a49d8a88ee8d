"""Ray: the one Ray Train driver and its worker function (:mod:`.trainer`), the Ray bootstrap
(:func:`.trainer.init_ray`), and what a cluster can hold (:mod:`.capacity`). Ray is imported lazily."""
