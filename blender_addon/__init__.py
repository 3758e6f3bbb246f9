"""Stylecore for Blender's Video Sequence Editor: stylize strips with neural style transfer.

Works as an extension (``blender_manifest.toml``, Blender 4.2+) and as a classic add-on
(``bl_info``). The heavy lifting happens in a separate stylecore worker process; this
package never imports torch or stylecore.
"""

bl_info = {
    "name": "Stylecore",
    "author": "Stylecore authors",
    "version": (0, 1, 0),
    "blender": (4, 2, 0),
    "location": "Sequencer > Sidebar > Stylize",
    "description": "Neural style transfer for video strips, with temporal stability",
    "category": "Sequencer",
}

import bpy  # noqa: E402 - bl_info comes first, for classic add-on discovery

from . import operators, props, ui  # noqa: E402

classes = (*props.CLASSES, *operators.CLASSES, *ui.CLASSES)

_register_classes, _unregister_classes = bpy.utils.register_classes_factory(classes)


def register() -> None:
    _register_classes()
    props.register_properties()
    operators.register_handlers()


def unregister() -> None:
    operators.unregister_handlers()
    props.unregister_properties()
    _unregister_classes()
