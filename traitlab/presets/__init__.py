"""Presets: everything one published data set needs (HAL's is ``traitlab.presets.hal``); general code never
names one, it finds them through the ``traitlab.plugins`` entry points."""
