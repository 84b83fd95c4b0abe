"""Browser demo of a trained model (Gradio): python -m ssma_tf.app --model PATH [--port 7860]

PATH is what `Segmenter.load` takes: a run's checkpoint folder or an exported SavedModel
(`python demo.py` exports demo_output/exported/ssma). Upload an RGB image and, optionally,
the other modalities (depth as a 16-bit PNG in millimetres); the page shows the coloured
labels, an overlay, the class legend and, side by side, the prediction with each modality
missing. A few images of the synthetic set are preloaded as examples. Needs the `app`
extra (`pip install -e ".[app]"`).
"""

import argparse
import html
import os
import sys
import tempfile

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

NUM_EXAMPLES = 3


def legend_html(result):
    """The classes present in `result`, each as a colour swatch, its name and its share."""
    rows = "".join(
        f'<li data-class="{html.escape(name)}"><span style="display:inline-block;width:1em;'
        f'height:1em;background:rgb{colour};margin-right:0.5em"></span>{html.escape(name)} '
        f"({100 * fraction:.1f} %)</li>" for name, colour, fraction in result.legend())
    return f'<ul style="list-style:none;padding:0">{rows}</ul>'


def segment_views(segmenter, files):
    """{modality: file path or None} -> (coloured labels, overlay, legend HTML, [coloured
    labels with each model modality missing in turn, None where it was not given or is the
    only one given])."""
    given = {n: p for n, p in files.items() if p}
    if not given:
        from ssma_tf.errors import InputError

        raise InputError("upload at least one image")
    result = segmenter.segment(given, "upload")
    without = []
    for name in segmenter.modalities:
        rest = {n: p for n, p in given.items() if n != name}
        without.append(segmenter.segment(rest, "upload").colored
                       if name in given and rest else None)
    return result.colored, result.overlay, legend_html(result), without


def synthetic_examples(folder, modalities):
    """[[path per modality]] of a few synthetic images written under `folder` (only when
    the model takes the synthetic set's modalities, rgb and depth)."""
    if set(modalities) - {"rgb", "depth"}:
        return []
    from ssma_tf.data import synthetic

    lists = synthetic.generate(folder, num_train=0, num_val=NUM_EXAMPLES)
    root = os.path.dirname(lists["val"])
    with open(lists["val"]) as handle:
        rows = [line.split() for line in handle if line.strip()]
    column = {"rgb": 0, "depth": 1}
    return [[os.path.join(root, row[column[n]]) for n in modalities] for row in rows]


def build_app(segmenter, examples_dir=None):
    """The gr.Blocks page for `segmenter`."""
    import gradio as gr

    modalities = segmenter.modalities
    with gr.Blocks(title="ssma_tf segmentation") as page:
        name = os.path.join(*os.path.normpath(segmenter.source).split(os.sep)[-2:])
        gr.Markdown(f"## Segmentation: {html.escape(name)}\n"
                    f"Inputs: {', '.join(modalities)}. Leave one empty to treat it as missing.")
        with gr.Row():
            inputs = []
            for name in modalities:
                if segmenter.specs[name].channels == 3 and name == modalities[0]:
                    box = gr.Image(type="filepath", image_mode=None, sources=["upload"],
                                   label=name, elem_id=f"input-{name}")
                else:
                    box = gr.File(file_types=["image"], label=f"{name} (16-bit PNG for raw "
                                  "depth, millimetres)", elem_id=f"input-{name}")
                inputs.append(box)
        button = gr.Button("Segment", elem_id="run", variant="primary")
        with gr.Row():
            colored = gr.Image(label="labels", format="png", interactive=False,
                               elem_id="labels")
            overlay = gr.Image(label="overlay", format="png", interactive=False,
                               elem_id="overlay")
            legend = gr.HTML(elem_id="legend")
        with gr.Row():
            missing = [gr.Image(label=f"without {name}", format="png", interactive=False,
                                elem_id=f"without-{name}") for name in modalities]
        examples = synthetic_examples(examples_dir or tempfile.mkdtemp(prefix="ssma_app_"),
                                      modalities)
        if examples:
            gr.Examples(examples, inputs, label="synthetic examples")

        def run(*paths):
            from ssma_tf.errors import InputError

            try:
                labels, blended, legend_text, without = segment_views(
                    segmenter, dict(zip(modalities, paths)))
            except InputError as exc:
                raise gr.Error(str(exc)) from None
            return [labels, blended, legend_text, *without]

        button.click(run, inputs, [colored, overlay, legend, *missing])
    return page


def _parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="run folder or exported SavedModel")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on")
    parser.add_argument("--port", type=int, default=7860)
    return parser


def main(argv=None):
    from ssma_tf.api import Segmenter
    from ssma_tf.errors import InputError, print_cli_error

    args = _parser().parse_args(argv)
    try:
        page = build_app(Segmenter.load(args.model))
    except InputError as exc:
        return print_cli_error(exc)
    page.launch(server_name=args.host, server_port=args.port, ssr_mode=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
