"""OpenTSLM for transformers: a time-series encoder and projector in front of any decoder-only LLM.

This folder is self-contained (flat files, relative imports only), so it is uploaded next to the weights and loads
with `trust_remote_code=True`. Importing it also registers the classes with the Auto API for local use.
"""

from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForCausalLM, AutoProcessor

from .compat_opentslm import SUPPORTED_TRANSFORMERS
from .configuration_opentslm import OpenTSLMConfig, OpenTSLMEncoderConfig
from .feature_extraction_opentslm import OpenTSLMFeatureExtractor
from .modeling_opentslm import OpenTSLMForCausalLM, OpenTSLMModel, OpenTSLMPreTrainedModel, OpenTSLMTimeSeriesEncoder
from .processing_opentslm import OpenTSLMProcessor

AutoConfig.register(OpenTSLMConfig.model_type, OpenTSLMConfig, exist_ok=True)
AutoConfig.register(OpenTSLMEncoderConfig.model_type, OpenTSLMEncoderConfig, exist_ok=True)
AutoModel.register(OpenTSLMConfig, OpenTSLMModel, exist_ok=True)
AutoModelForCausalLM.register(OpenTSLMConfig, OpenTSLMForCausalLM, exist_ok=True)
AutoFeatureExtractor.register(OpenTSLMConfig, OpenTSLMFeatureExtractor, exist_ok=True)
AutoProcessor.register(OpenTSLMConfig, OpenTSLMProcessor, exist_ok=True)

__all__ = [
    "OpenTSLMConfig",
    "OpenTSLMEncoderConfig",
    "OpenTSLMFeatureExtractor",
    "OpenTSLMForCausalLM",
    "OpenTSLMModel",
    "OpenTSLMPreTrainedModel",
    "OpenTSLMProcessor",
    "OpenTSLMTimeSeriesEncoder",
    "SUPPORTED_TRANSFORMERS",
]
