"""Problem synthesis: new problems from seed problems (rewrite, change numbers, add a step, change context) or from
math text, at named education levels, each given a pseudo-gold answer by majority vote over k teacher solutions.

    from mathforge.synth import SynthesizeConfig, synthesize
"""

from mathforge.synth.stage import SynthesizeConfig, SynthesizeStage
from mathforge.synth.synthesize import SynthResult, synthesize

__all__ = ["SynthResult", "SynthesizeConfig", "SynthesizeStage", "synthesize"]
