"""A tiny SAM2 (5 Hiera blocks, 64 px) for segmentation tests: the real architecture, seconds on a CPU."""

TINY_SAM2 = (
    "model.config={model_type: sam2, vision_config: {model_type: sam2_vision_model, backbone_config: {model_type: "
    "sam2_hiera_det_model, hidden_size: 8, num_attention_heads: 1, image_size: [64, 64], blocks_per_stage: "
    "[1, 1, 2, 1], embed_dim_per_stage: [8, 16, 32, 64], num_attention_heads_per_stage: [1, 1, 1, 1], "
    "window_size_per_stage: [4, 4, 2, 2], global_attention_blocks: [3], window_positional_embedding_background_size: "
    "[4, 4]}, backbone_channel_list: [64, 32, 16, 8], backbone_feature_sizes: [[16, 16], [8, 8], [4, 4]], "
    "fpn_hidden_size: 16}, prompt_encoder_config: {hidden_size: 16, image_size: 64, patch_size: 16}, "
    "mask_decoder_config: {hidden_size: 16, mlp_dim: 32, num_attention_heads: 2, iou_head_hidden_dim: 16}}"
)
