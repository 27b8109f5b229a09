"""Input data for the runners: parse shape/range flags, generate seeded feeds, load and save them.

``spec`` parses the CLI strings, ``synthetic`` makes reproducible random feeds from a model's
input metadata, ``io`` reads and writes ``.npz`` and Polygraphy JSON feeds and checks them
against the model, ``polygraphy_json`` speaks Polygraphy's JSON format (inputs and outputs).
"""
from trtdebug.inputs.io import load_inputs, save_inputs, validate_feeds
from trtdebug.inputs.polygraphy_json import load_polygraphy_inputs, load_polygraphy_outputs, save_polygraphy_inputs
from trtdebug.inputs.spec import format_shape, parse_input_shapes, parse_val_ranges
from trtdebug.inputs.synthetic import DEFAULT_RANGE, generate_feeds

__all__ = [
    "DEFAULT_RANGE",
    "format_shape",
    "generate_feeds",
    "load_inputs",
    "load_polygraphy_inputs",
    "load_polygraphy_outputs",
    "parse_input_shapes",
    "parse_val_ranges",
    "save_inputs",
    "save_polygraphy_inputs",
    "validate_feeds",
]
