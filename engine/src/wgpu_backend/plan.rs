//! Device memory plan: where every value lives during a run.
//!
//! Activations share one arena buffer. A value occupies its element range from the node that
//! produces it (graph inputs: before the first node) to the last node that reads it (graph
//! outputs: to the end of the run); two values may share elements only when those ranges do
//! not intersect. Reshape-like ops (Flatten, Reshape, Squeeze, Unsqueeze, Identity, Dropout)
//! produce aliases: their output is their input's range, and the input's lifetime stretches
//! to cover the alias's readers. When a Concat joins along an axis with only size-1 axes before
//! it (channels at batch 1), each input is a contiguous slice of the output: its producer writes
//! there directly and the Concat costs nothing. Nothing is written in place, so a kernel never
//! reads elements it is writing.

use crate::error::{Error, Result};
use crate::ir::{Graph, Op, ValueId};
use crate::tensor::DType;

/// Offsets are multiples of this many elements (256 bytes).
const ALIGN_ELEMS: usize = 64;

/// Where a value lives on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loc {
    /// Element offset in the arena.
    Arena(u32),
    /// A constant's own buffer (the id is the constant's value).
    Const(ValueId),
    /// Not on the device (non-f32 values nothing reads on the GPU path).
    None,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub locs: Vec<Loc>,
    /// Element count of every value (0 when unknown).
    pub elems: Vec<usize>,
    /// Values that are views of another value (no dispatch writes them).
    pub aliased: Vec<bool>,
    /// Concat inputs whose producer writes straight into the Concat output (no copy).
    pub embedded: Vec<bool>,
    /// Elements the arena must hold.
    pub arena_elems: usize,
    /// Activation bytes live right after each node.
    pub live_after: Vec<u64>,
}

fn is_alias(op: &Op) -> bool {
    matches!(
        op,
        Op::Flatten { .. }
            | Op::Reshape { .. }
            | Op::Squeeze
            | Op::Unsqueeze
            | Op::Identity
            | Op::Dropout
    )
}

pub fn plan(graph: &Graph) -> Result<Plan> {
    let nv = graph.values.len();
    let n = graph.nodes.len();
    let elems: Vec<usize> = graph
        .values
        .iter()
        .map(|v| v.fixed_shape().map_or(0, |s| s.iter().product()))
        .collect();
    // parent[v]: (value, element offset) whose storage v is part of: views alias their input
    // at offset 0; Concat inputs are placed inside the Concat output at their slice.
    let mut parent: Vec<Option<(ValueId, usize)>> = vec![None; nv];
    let mut aliased = vec![false; nv];
    let mut embedded = vec![false; nv];
    let mut first = vec![usize::MAX; nv];
    for &id in &graph.inputs {
        first[id.0] = 0;
    }
    let is_f32 = |id: ValueId| graph.value(id).dtype == Some(DType::F32);
    for (i, node) in graph.nodes.iter().enumerate() {
        for &o in &node.outputs {
            first[o.0] = i;
        }
        if is_alias(&node.op) {
            if let (Some(Some(x)), Some(&y)) = (node.inputs.first(), node.outputs.first()) {
                let same_type = graph.value(*x).dtype == graph.value(y).dtype;
                if same_type && elems[x.0] == elems[y.0] && !graph.inputs.contains(&y) {
                    parent[y.0] = Some((*x, 0));
                    aliased[y.0] = true;
                }
            }
        }
    }
    // Concat along an axis with nothing but size-1 axes before it: every input is one
    // contiguous slice of the output, so its producer can write there directly.
    for node in &graph.nodes {
        let (Op::Concat { axis }, Some(&y)) = (&node.op, node.outputs.first()) else {
            continue;
        };
        let Some(ys) = graph.value(y).fixed_shape() else {
            continue;
        };
        let r = ys.len() as i64;
        let ax = if *axis < 0 { axis + r } else { *axis };
        if ax < 0 || ax >= r || !is_f32(y) || graph.inputs.contains(&y) {
            continue;
        }
        let ax = ax as usize;
        if ys[..ax].iter().product::<usize>() != 1 {
            continue;
        }
        let after: usize = ys[ax + 1..].iter().product();
        let mut base = 0usize;
        for id in node.inputs.iter().flatten() {
            let once = node.inputs.iter().flatten().filter(|&&v| v == *id).count() == 1;
            let produced = first[id.0] != usize::MAX && !graph.inputs.contains(id);
            if once
                && produced
                && *id != y
                && parent[id.0].is_none()
                && !graph.is_constant(*id)
                && is_f32(*id)
            {
                parent[id.0] = Some((y, base * after));
                embedded[id.0] = true;
            }
            base += graph
                .value(*id)
                .fixed_shape()
                .and_then(|s| s.get(ax).copied())
                .unwrap_or(0);
        }
    }
    // Resolve every value to its storage root and element offset inside it.
    let resolve = |mut v: ValueId| -> (ValueId, usize) {
        let mut off = 0usize;
        while let Some((p, o)) = parent[v.0] {
            off += o;
            v = p;
        }
        (v, off)
    };
    let res: Vec<(ValueId, usize)> = (0..nv).map(|v| resolve(ValueId(v))).collect();
    let root: Vec<ValueId> = res.iter().map(|r| r.0).collect();
    // A root lives from the first definition of any member to the last read of any member.
    let mut root_first = vec![usize::MAX; nv];
    for v in 0..nv {
        if first[v] != usize::MAX {
            let r = root[v].0;
            root_first[r] = root_first[r].min(first[v]);
        }
    }
    let first = root_first;
    let mut last = vec![0usize; nv];
    for (i, node) in graph.nodes.iter().enumerate() {
        for id in node.inputs.iter().flatten() {
            let r = root[id.0];
            last[r.0] = last[r.0].max(i);
        }
    }
    for &id in &graph.outputs {
        last[root[id.0].0] = n;
    }
    let mut locs = vec![Loc::None; nv];
    // Storage roots in definition order.
    let mut roots: Vec<ValueId> = (0..nv)
        .map(ValueId)
        .filter(|&id| {
            root[id.0] == id
                && !graph.is_constant(id)
                && first[id.0] != usize::MAX
                && graph.value(id).dtype == Some(DType::F32)
        })
        .collect();
    roots.sort_by_key(|id| (first[id.0], id.0));
    // Live allocations: (offset, len, last step).
    let mut active: Vec<(usize, usize, usize)> = Vec::new();
    let mut arena = 0usize;
    for &r in &roots {
        let s = first[r.0];
        let lst = last[r.0].max(s);
        last[r.0] = lst;
        active.retain(|&(_, _, l)| l >= s);
        active.sort_unstable();
        let len = elems[r.0].div_ceil(ALIGN_ELEMS) * ALIGN_ELEMS;
        let mut off = 0usize;
        for &(o, l, _) in &active {
            if o >= off + len {
                break;
            }
            off = off.max(o + l);
        }
        active.push((off, len, lst));
        arena = arena.max(off + len);
        if off > u32::MAX as usize {
            return Err(Error::Backend {
                backend: "wgpu".into(),
                message: format!("activation offset {off} exceeds 32-bit shader indexing"),
            });
        }
        locs[r.0] = Loc::Arena(off as u32);
    }
    for id in graph.constants.keys() {
        locs[id.0] = Loc::Const(*id);
    }
    for v in 0..nv {
        let (r, off) = res[v];
        if r.0 != v {
            locs[v] = match locs[r.0] {
                Loc::Arena(base) => Loc::Arena(base + off as u32),
                Loc::Const(c) if off == 0 => Loc::Const(c),
                _ => Loc::None,
            };
        }
    }
    let live_after = (0..n)
        .map(|i| {
            roots
                .iter()
                .filter(|r| first[r.0] <= i && (last[r.0] > i || first[r.0] == i))
                .map(|r| elems[r.0] as u64 * 4)
                .sum()
        })
        .collect();
    Ok(Plan {
        locs,
        elems,
        aliased,
        embedded,
        arena_elems: arena,
        live_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Dim, Node};

    fn f32v(g: &mut Graph, name: &str, n: usize) -> ValueId {
        g.add_value(
            name,
            Some(DType::F32),
            Some(vec![Dim::Fixed(1), Dim::Fixed(n)]),
        )
    }

    fn node(op: Op, i: ValueId, o: ValueId) -> Node {
        Node {
            name: format!("n{}", o.0),
            op,
            inputs: vec![Some(i)],
            outputs: vec![o],
            origin: vec![],
        }
    }

    #[test]
    fn reuses_dead_ranges_and_aliases_views() {
        let mut g = Graph::default();
        let x = f32v(&mut g, "x", 100);
        let a = f32v(&mut g, "a", 100);
        let b = f32v(&mut g, "b", 100);
        let c = f32v(&mut g, "c", 100);
        let d = f32v(&mut g, "d", 100);
        g.inputs = vec![x];
        g.outputs = vec![d];
        g.nodes = vec![
            node(Op::Relu, x, a),
            node(Op::Relu, a, b),
            node(Op::Identity, b, c),
            node(Op::Relu, c, d),
        ];
        let p = plan(&g).unwrap_or_else(|e| panic!("{e}"));
        // b is a view target: c aliases it.
        assert!(p.aliased[c.0]);
        assert_eq!(p.locs[c.0], p.locs[b.0]);
        // x dies at node 0, a at node 1: b may reuse x's range, d reuses a's.
        assert_eq!(p.locs[b.0], p.locs[x.0]);
        assert_eq!(p.locs[d.0], p.locs[a.0]);
        assert_ne!(p.locs[a.0], p.locs[x.0]);
        assert_eq!(p.arena_elems, 2 * 128);
    }

    #[test]
    fn concat_inputs_are_written_into_their_slices() {
        let mut g = Graph::default();
        let x = f32v(&mut g, "x", 10);
        let a = f32v(&mut g, "a", 10);
        let b = f32v(&mut g, "b", 10);
        let y = f32v(&mut g, "y", 30);
        g.inputs = vec![x];
        g.outputs = vec![y];
        g.nodes = vec![
            node(Op::Relu, x, a),
            node(Op::Sigmoid, x, b),
            Node {
                name: "cat".into(),
                op: Op::Concat { axis: 1 },
                // x is a graph input: copied, not embedded.
                inputs: vec![Some(a), Some(x), Some(b)],
                outputs: vec![y],
                origin: vec![],
            },
        ];
        let p = plan(&g).unwrap_or_else(|e| panic!("{e}"));
        let Loc::Arena(base) = p.locs[y.0] else {
            panic!("y not in arena")
        };
        assert_eq!(p.locs[a.0], Loc::Arena(base));
        assert_eq!(p.locs[b.0], Loc::Arena(base + 20));
        assert!(p.embedded[a.0] && p.embedded[b.0] && !p.embedded[x.0]);
        // x (live from the start) must not overlap y's range, which a and b occupy early.
        let Loc::Arena(xo) = p.locs[x.0] else {
            panic!("x not in arena")
        };
        assert!(xo as usize + 10 <= base as usize || base as usize + 30 <= xo as usize);
    }
}
