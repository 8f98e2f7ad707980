//! `engine rf`: receptive field (size, effective stride, offset) of every node output, the
//! downsampling-only shortcut estimate next to it, and optionally the measured one.

use anyhow::Result;
use clap::Args;
use engine::verify::{self, RfReport};

use crate::common::ModelArgs;

#[derive(Args, Debug)]
#[command(after_help = "Example:\n  engine rf zoo:resnet50 --node avgpool --empirical")]
pub struct RfArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Only this node (its ONNX name).
    #[arg(long)]
    pub node: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also measure each listed node's receptive field by perturbing the input
    /// (~4·log₂(H)+2 runs per node: pick one node with --node on large models).
    #[arg(long)]
    pub empirical: bool,
}

pub fn run(args: RfArgs) -> Result<()> {
    let model = args.model.load()?;
    let options = args.model.checked_session_options()?;
    let report = verify::rf_report(&model, &options, args.node.as_deref(), args.empirical)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&report));
    }
    Ok(())
}

fn pair(v: [u64; 2]) -> String {
    if v[0] == v[1] {
        v[0].to_string()
    } else {
        format!("{}x{}", v[0], v[1])
    }
}

fn offset(v: [f64; 2]) -> String {
    if v[0] == v[1] {
        format!("{}", v[0])
    } else {
        format!("{},{}", v[0], v[1])
    }
}

fn table(r: &RfReport) -> String {
    let mut s = format!(
        "Receptive fields of {} (input pixels; H and W shown once when equal)\n",
        r.model
    );
    let name_w = r
        .nodes
        .iter()
        .map(|n| n.name.len())
        .max()
        .unwrap_or(4)
        .clamp(4, 40);
    let measured = r.nodes.iter().any(|n| n.empirical_size.is_some());
    s.push_str(&format!(
        "{:<name_w$}  {:<18}  {:>9}  {:>6}  {:>8}  {:>8}{}\n",
        "node",
        "op",
        "size",
        "stride",
        "offset",
        "shortcut",
        if measured { "  measured" } else { "" }
    ));
    let mut unaligned = Vec::new();
    let mut disagree = 0;
    for n in &r.nodes {
        let mut name = n.name.clone();
        if name.len() > name_w {
            name = format!("…{}", &name[name.len() - (name_w - 1)..]);
        }
        let mark = if n.aligned { " " } else { "*" };
        if !n.aligned {
            unaligned.push(n.name.as_str());
        }
        s.push_str(&format!(
            "{:<name_w$}  {:<18}  {:>8}{mark}  {:>6}  {:>8}  {:>8}",
            name,
            n.op,
            pair(n.rf.size),
            pair(n.rf.stride),
            offset(n.rf.offset),
            pair(n.shortcut_size),
        ));
        if let (Some(e), Some(x)) = (n.empirical_size, n.expected_empirical) {
            let ok = n.empirical_agrees() == Some(true);
            if !ok {
                disagree += 1;
            }
            let clip = if x != n.rf.size {
                format!(" (window clipped by the image to {})", pair(x))
            } else {
                String::new()
            };
            s.push_str(&format!(
                "  {:>8} {}{clip}",
                pair(e),
                if ok { "✓" } else { "✗" }
            ));
        }
        s.push('\n');
    }
    // The figure course problems ask for: the receptive field at the global pool's input.
    let gap_input = r
        .nodes
        .iter()
        .find(|n| n.op == "GlobalAveragePool" || n.op == "GlobalMaxPool")
        .and_then(|gap| {
            let feed = gap.inputs.first()?;
            r.nodes.iter().find(|n| &n.output == feed).map(|n| (gap, n))
        });
    if let Some((gap, n)) = gap_input {
        s.push_str(&format!(
            "\nAt the input of the global pool '{}' (output of '{}'): receptive field {}, stride {}; the downsampling-only shortcut says {}.\n",
            gap.name,
            n.name,
            pair(n.rf.size),
            pair(n.rf.stride),
            pair(n.shortcut_size)
        ));
    }
    if let Some(last) = r.nodes.last() {
        if last.shortcut_size != last.rf.size {
            s.push_str(&format!(
                "The shortcut estimate follows only the downsampling layers; at '{}' it says {} but the exact receptive field is {}: every stride-1 k×k layer adds (k−1)·(its input's stride) as well.\n",
                last.name,
                pair(last.shortcut_size),
                pair(last.rf.size)
            ));
        }
    }
    if unaligned.is_empty() {
        s.push_str(
            "All merged paths (residual adds, concats) are aligned: same stride and centre.\n",
        );
    } else {
        s.push_str(&format!(
            "* {} node(s) merge paths that are not aligned (different strides or centres): the size is the union of the paths' windows, no longer centred on each path, e.g. {}\n",
            unaligned.len(),
            unaligned.iter().take(3).copied().collect::<Vec<_>>().join(", ")
        ));
    }
    if measured {
        let total = r
            .nodes
            .iter()
            .filter(|n| n.empirical_size.is_some())
            .count();
        s.push_str(&format!(
            "Measured (perturbing input bands, centre output position): {}/{} agree with the analytic window clipped to the image.\n",
            total - disagree,
            total
        ));
    }
    s
}
