"""Planning: the field vocabulary (:mod:`.values`), the pure planner (:mod:`.plan`) and planning every
destination of a config (:mod:`.planner`)."""
