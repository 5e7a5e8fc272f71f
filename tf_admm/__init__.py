"""tf-admm: ADMM weight pruning and quantization for TensorFlow/Keras (tf_keras and Keras 3)."""

# keras3: the Keras 3 adapter. Importing it registers its classes with Keras 3, so that
# keras.models.load_model reads a wrapped Keras 3 model without custom_objects.
from tf_admm import allocation, keras3, planning, projections, report, storage
from tf_admm.compat import keras, tf
from tf_admm.finite import NonFiniteError
from tf_admm.grouping import ChannelGroup, channel_groups
from tf_admm.planning import LayerPlan, Plan, Target, WeightPlan
from tf_admm.registry import CompressibleLayer
from tf_admm.saving import ModelFileError, load_model
from tf_admm.sensitivity import sensitivity_allocation, sensitivity_curves
from tf_admm.shrink import ShrinkError, shrink, shrink_plan
from tf_admm.spec import Allocation, RhoSchedule, Rule, Spec, SpecError, Unit
from tf_admm.strip import strip
from tf_admm.training import (
    AdmmModel,
    AdmmUpdate,
    Phase,
    admm_wrap,
    callbacks,
    plan,
    shared_weights,
    wrappers,
)
from tf_admm.wrapper import AdmmWrapper

__version__ = "0.1.0.dev0"

__all__ = [
    "Allocation",
    "LayerPlan",
    "Plan",
    "WeightPlan",
    "AdmmModel",
    "AdmmUpdate",
    "AdmmWrapper",
    "ChannelGroup",
    "CompressibleLayer",
    "ModelFileError",
    "NonFiniteError",
    "Phase",
    "RhoSchedule",
    "Rule",
    "ShrinkError",
    "Spec",
    "SpecError",
    "Target",
    "Unit",
    "admm_wrap",
    "allocation",
    "callbacks",
    "channel_groups",
    "keras",
    "keras3",
    "load_model",
    "plan",
    "planning",
    "projections",
    "report",
    "sensitivity_allocation",
    "sensitivity_curves",
    "shared_weights",
    "shrink",
    "shrink_plan",
    "storage",
    "strip",
    "tf",
    "wrappers",
]
