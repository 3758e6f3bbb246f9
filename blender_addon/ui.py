"""The "Stylize" tab of the sequencer's sidebar, for the active strip."""

import bpy

from . import jobs, props, vse
from .operators import active_session

PREVIEW_SCALE = 8.0
# Grey hint text in empty fields; checked on the RNA rather than assumed per version.
_HAS_PLACEHOLDER = "placeholder" in bpy.types.UILayout.bl_rna.functions["prop"].parameters


class SEQUENCER_PT_stylize(bpy.types.Panel):
    bl_space_type = "SEQUENCE_EDITOR"
    bl_region_type = "UI"
    bl_category = "Stylize"
    bl_label = "Stylize"

    @classmethod
    def poll(cls, context: "bpy.types.Context") -> bool:
        return context.scene is not None and vse.editor(context.scene) is not None

    def draw(self, context: "bpy.types.Context") -> None:
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = True  # the keyframe dot beside animatable fields
        scene = context.scene
        strip = vse.active_strip(scene)
        session = active_session()
        if session is not None:
            _draw_progress(layout, session)
        if strip is None:
            layout.label(text="Select a strip to stylize", icon="INFO")
            return
        if props.strip_settings(strip).is_result:
            _draw_result(layout, strip)
        elif vse.is_sound(strip):
            layout.label(text="Sound strips cannot be stylized", icon="INFO")
        else:
            _draw_settings(layout, scene, strip, running=session is not None)
        _draw_preview(layout, scene)
        status = props.scene_settings(scene).status
        if status and session is None:
            layout.label(text=status)


def _draw_progress(layout: "bpy.types.UILayout", session: object) -> None:
    row = layout.row(align=True)
    if hasattr(row, "progress"):  # UILayout.progress exists from Blender 4.0
        row.progress(factor=session.fraction, type="BAR", text=session.status)
    else:
        row.label(text=session.status)
    row.operator("sequencer.stylize_cancel", text="", icon="CANCEL")


def _draw_settings(layout: "bpy.types.UILayout", scene: "bpy.types.Scene", strip: "bpy.types.Strip",
                   running: bool) -> None:
    st = props.strip_settings(strip)
    col = layout.column()
    col.prop(st, "mode")
    col.prop(st, "style_source", expand=True)
    if st.style_source == "STRIP":
        col.prop_search(st, "style_strip", vse.editor(scene), vse.all_strips_attr(), text="Style Strip")
    else:
        col.prop(st, "style_image", text="Style Video" if st.mode == "STYLE_VIDEO" else "Style Image")
    if st.mode == "FEEDFORWARD":
        _draw_model(col, scene, st)
    col.prop(strip, props.STYLE_WEIGHT, text="Style Weight")
    col.prop(st, "temporal_weight")
    if st.mode != "FEEDFORWARD":
        col.prop(st, "iterations")
        col.prop(st, "loss_net")
    col.prop(st, "preserve_colors")
    col.prop(st, "size")
    col.prop(st, "batch")

    row = layout.row(align=True)
    row.enabled = not running
    row.scale_y = 1.4
    op = row.operator("sequencer.stylize", text="Stylize", icon="BRUSH_DATA")
    op.strip = ""
    op = row.operator("sequencer.stylize", text="Preview", icon="HIDE_OFF")
    op.strip, op.preview = strip.name, True

    if st.mode == "FEEDFORWARD":
        _draw_training(layout, st, running)

    result = jobs.find_result(scene, strip)
    if result is not None:
        box = layout.box()
        box.label(text=f"Result: {result.name}", icon="IMAGE_DATA")
        box.prop(result, "blend_alpha", text="Mix", slider=True)
        box.operator("sequencer.stylize_open_folder", icon="FILE_FOLDER")


def _draw_model(col: "bpy.types.UILayout", scene: "bpy.types.Scene", st: "props.StylecoreStripSettings") -> None:
    """The Model field: searches the worker's model list once it was fetched."""
    hint = "Trained on the Style Image" if (st.style_image or st.style_strip) else "Shipped default"
    row = col.row(align=True)
    models = props.scene_settings(scene).models
    if len(models):
        row.prop_search(st, "model", props.scene_settings(scene), "models", text="Model")
    elif _HAS_PLACEHOLDER:
        row.prop(st, "model", placeholder=hint)
    else:
        row.prop(st, "model")
    row.operator("sequencer.stylize_refresh_models", text="", icon="FILE_REFRESH")


def _draw_training(layout: "bpy.types.UILayout", st: "props.StylecoreStripSettings", running: bool) -> None:
    """Train Style: a real-time model for the style image (feedforward mode)."""
    box = layout.box()
    style = st.style_image.strip() if st.style_source == "FILE" else st.style_strip.strip()
    if style and st.no_model_style and not st.model.strip():
        box.label(text="No model is trained on this style image yet: train one", icon="ERROR")
    box.prop(st, "train_quality")
    box.prop(st, "train_own_frames")
    box.prop(st, "train_start_over")
    row = box.row()
    row.enabled = not running and bool(style)
    row.operator("sequencer.stylize_train", text="Train Style", icon="SHADERFX")


def _draw_result(layout: "bpy.types.UILayout", strip: "bpy.types.Strip") -> None:
    st = props.strip_settings(strip)
    col = layout.column()
    col.label(text=f"Stylized from: {st.source_name}", icon="LINKED")
    col.prop(strip, "blend_alpha", text="Mix", slider=True)
    row = layout.row(align=True)
    op = row.operator("sequencer.stylize", text="Re-stylize", icon="FILE_REFRESH")
    op.strip = strip.name
    row.operator("sequencer.stylize_select_source", text="", icon="RESTRICT_SELECT_OFF")
    layout.operator("sequencer.stylize_open_folder", icon="FILE_FOLDER")


def _draw_preview(layout: "bpy.types.UILayout", scene: "bpy.types.Scene") -> None:
    image = props.scene_settings(scene).preview_image
    if image is None or image.preview is None:
        return
    box = layout.box()
    box.label(text="Preview", icon="IMAGE")
    box.template_icon(icon_value=image.preview.icon_id, scale=PREVIEW_SCALE)


CLASSES = (SEQUENCER_PT_stylize,)
