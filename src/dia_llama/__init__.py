"""dia-llama: Hugging Face-native Dia-LLaMA for 3D chest CT report generation.

Importing the package registers the model with the transformers Auto classes and the `ct-report-generation`
pipeline task, and marks its classes for remote code, so every `save_pretrained` / `push_to_hub` also writes the code
files a folder needs to load with `trust_remote_code=True` where the package is not installed (config.json also
declares the pipeline: `pipeline(model=REPO, trust_remote_code=True)`).
"""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageTextToText,
    AutoProcessor,
)
from transformers.pipelines import PIPELINE_REGISTRY

from .configuration_dia_llama import CHEXPERT_14, CT_RATE_18, DiaLlamaConfig, DiaLlamaVisionConfig
from .image_processing_dia_llama import DiaLlamaVolumeProcessor
from .modeling_dia_llama import (
    DiaLlamaDiagnosis,
    DiaLlamaForConditionalGeneration,
    DiaLlamaModel,
    DiaLlamaPreTrainedModel,
)
from .pipeline_dia_llama import PIPELINE_TASK, CTReportGenerationPipeline
from .processing_dia_llama import DiaLlamaProcessor
from .volume_io import Volume, VolumeReadError, read_volume

__version__ = "0.1.0"

AutoConfig.register(DiaLlamaConfig.model_type, DiaLlamaConfig, exist_ok=True)
AutoConfig.register(DiaLlamaVisionConfig.model_type, DiaLlamaVisionConfig, exist_ok=True)
AutoModel.register(DiaLlamaConfig, DiaLlamaModel, exist_ok=True)
AutoModelForImageTextToText.register(DiaLlamaConfig, DiaLlamaForConditionalGeneration, exist_ok=True)
AutoImageProcessor.register(DiaLlamaConfig, image_processor_classes={"pil": DiaLlamaVolumeProcessor}, exist_ok=True)
AutoProcessor.register(DiaLlamaConfig, DiaLlamaProcessor, exist_ok=True)
if PIPELINE_TASK not in PIPELINE_REGISTRY.get_supported_tasks():  # pipeline(PIPELINE_TASK, model=model, processor=...)
    PIPELINE_REGISTRY.register_pipeline(PIPELINE_TASK, pipeline_class=CTReportGenerationPipeline,
                                        pt_model=AutoModelForImageTextToText, type="multimodal")

DiaLlamaConfig.register_for_auto_class()
DiaLlamaModel.register_for_auto_class("AutoModel")
DiaLlamaForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
DiaLlamaProcessor.register_for_auto_class("AutoProcessor")
DiaLlamaVolumeProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = [
    "CHEXPERT_14",
    "CT_RATE_18",
    "DiaLlamaConfig",
    "DiaLlamaVisionConfig",
    "DiaLlamaPreTrainedModel",
    "DiaLlamaModel",
    "DiaLlamaForConditionalGeneration",
    "DiaLlamaDiagnosis",
    "DiaLlamaProcessor",
    "DiaLlamaVolumeProcessor",
    "CTReportGenerationPipeline",
    "PIPELINE_TASK",
    "Volume",
    "VolumeReadError",
    "read_volume",
]
