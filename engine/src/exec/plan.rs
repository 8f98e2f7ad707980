//! Static memory plan for the activations of a bound graph.
//!
//! Every non-constant value (graph inputs and node outputs) gets a byte range in one arena.
//! Ranges are assigned from liveness: a value lives from the step that produces it (graph
//! inputs: step 0) to the last step that reads it (graph outputs: past the last node). Two
//! values may share bytes only when their live ranges do not intersect, so the arena can be
//! allocated once at session creation and reused by every run. Elementwise ops whose input dies
//! at that step write over their input ("in place"), which removes a buffer per activation in
//! chains like Conv → Relu.
//!
//! The profiler and `verify` read the plan too (per-step live bytes, peak), so it is public.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::ir::{Graph, Op, ValueId};

/// Offsets are multiples of this many bytes so SIMD kernels see cache-line aligned buffers.
pub const ALIGN: usize = 64;

/// One activation value in the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedValue {
    pub value: ValueId,
    /// Bytes the value's elements occupy (element count × dtype size).
    pub bytes: usize,
    /// Byte offset in the arena (a multiple of [`ALIGN`]).
    pub offset: usize,
    /// Step (node index) producing it; 0 for graph inputs.
    pub first: usize,
    /// Last step reading it; `nodes.len()` for graph outputs (kept until the run ends).
    pub last: usize,
    /// Set when this value reuses the buffer of an input that dies at the producing step.
    pub in_place_of: Option<ValueId>,
    /// Set when this value is written straight into its slice of a Concat's output (that
    /// output's value): the Concat then copies nothing for it.
    pub part_of: Option<ValueId>,
}

/// The memory plan of a bound graph.
#[derive(Debug, Clone, Default)]
pub struct MemoryPlan {
    /// Activation values in the order they are first defined.
    pub values: Vec<PlannedValue>,
    index: HashMap<ValueId, usize>,
    /// Bytes the arena must hold (≥ `planned_peak_bytes`; the difference is fragmentation).
    pub arena_bytes: usize,
    /// Most activation bytes live at any one step (inputs and outputs of the running node
    /// included; values sharing a buffer in place counted once).
    pub planned_peak_bytes: usize,
    /// For each node: activation bytes live while it runs.
    pub live_bytes_during: Vec<usize>,
    /// For each node: activation bytes still live right after it ran (values read later, graph
    /// outputs, and its own outputs).
    pub live_bytes_after: Vec<usize>,
    /// Sum of the sizes of all activation values (what a plan without reuse would need).
    pub total_activation_bytes: usize,
}

impl MemoryPlan {
    /// The planned entry of a value, `None` for constants and values outside the plan.
    pub fn get(&self, id: ValueId) -> Option<&PlannedValue> {
        self.index.get(&id).map(|&i| &self.values[i])
    }

    /// Checks that no two values whose live ranges intersect share bytes (unless one was
    /// planned in place of the other). Used by tests and `verify`.
    pub fn validate(&self) -> Result<()> {
        for (i, a) in self.values.iter().enumerate() {
            if a.offset % ALIGN != 0 || a.offset + a.bytes > self.arena_bytes {
                return Err(Error::Model(format!(
                    "memory plan: value {:?} misplaced",
                    a.value
                )));
            }
            for b in &self.values[i + 1..] {
                let same_buffer = self.root(a.value) == self.root(b.value);
                if same_buffer {
                    continue;
                }
                let time = a.first <= b.last && b.first <= a.last;
                let space = a.offset < b.offset + b.bytes && b.offset < a.offset + a.bytes;
                if time && space && a.bytes > 0 && b.bytes > 0 {
                    return Err(Error::Model(format!(
                        "memory plan: values {:?} and {:?} overlap while both live",
                        a.value, b.value
                    )));
                }
            }
        }
        Ok(())
    }

    /// The value whose buffer `id` ultimately lies in (itself when not in place and not part
    /// of a Concat's output).
    fn root(&self, mut id: ValueId) -> ValueId {
        while let Some(p) = self.get(id).and_then(|v| v.in_place_of.or(v.part_of)) {
            id = p;
        }
        id
    }
}

/// Which input of `op` may share its buffer with output 0 (same element count, elementwise or
/// pure re-view semantics), when that input dies at this node. The executor relies on this
/// list: every op named here is run so that writing the output over that input is correct.
pub fn in_place_input(op: &Op) -> Option<usize> {
    match op {
        Op::Relu
        | Op::LeakyRelu { .. }
        | Op::Sigmoid
        | Op::Clip
        | Op::BatchNormalization { .. }
        | Op::Add
        | Op::Sub
        | Op::Mul
        | Op::Div
        | Op::Identity
        | Op::Dropout
        | Op::Reshape { .. }
        | Op::Flatten { .. }
        | Op::Squeeze
        | Op::Unsqueeze => Some(0),
        _ => None,
    }
}

/// Byte size of a value of a bound graph.
pub fn value_bytes(graph: &Graph, id: ValueId) -> Result<usize> {
    let info = graph.value(id);
    let shape = info.fixed_shape().ok_or_else(|| {
        Error::Model(format!(
            "value '{}' has no fixed shape (graph not bound)",
            info.name
        ))
    })?;
    let dtype = info.dtype.ok_or_else(|| {
        Error::Model(format!(
            "value '{}' has no element type (graph not bound)",
            info.name
        ))
    })?;
    Ok(shape.iter().product::<usize>() * dtype.size_of())
}

fn align_up(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// Plans the activations of a bound graph. `in_place` enables buffer sharing for the ops of
/// [`in_place_input`].
pub fn plan(graph: &Graph, in_place: bool) -> Result<MemoryPlan> {
    let n = graph.nodes.len();
    let mut values: Vec<PlannedValue> = Vec::new();
    let mut index: HashMap<ValueId, usize> = HashMap::new();
    let mut add = |id: ValueId, first: usize, values: &mut Vec<PlannedValue>| -> Result<()> {
        if graph.is_constant(id) || index.contains_key(&id) {
            return Ok(());
        }
        let bytes = value_bytes(graph, id)?;
        index.insert(id, values.len());
        values.push(PlannedValue {
            value: id,
            bytes,
            offset: 0,
            first,
            last: first,
            in_place_of: None,
            part_of: None,
        });
        Ok(())
    };
    for &id in &graph.inputs {
        add(id, 0, &mut values)?;
    }
    for (i, node) in graph.nodes.iter().enumerate() {
        for &id in &node.outputs {
            add(id, i, &mut values)?;
        }
    }
    // Last uses.
    for (i, node) in graph.nodes.iter().enumerate() {
        for id in node.inputs.iter().flatten() {
            match index.get(id) {
                Some(&k) => values[k].last = values[k].last.max(i),
                None if graph.is_constant(*id) => {}
                None => {
                    return Err(Error::Model(format!(
                        "node '{}' reads value '{}' that nothing produces",
                        node.name,
                        graph.value(*id).name
                    )))
                }
            }
        }
    }
    let is_output: Vec<bool> = {
        let mut v = vec![false; graph.values.len()];
        for id in &graph.outputs {
            v[id.0] = true;
        }
        v
    };
    for id in &graph.outputs {
        if let Some(&k) = index.get(id) {
            values[k].last = n;
        }
    }

    // Buffers: groups of values chained in place. `group[k]` = buffer index of value k.
    let mut group: Vec<usize> = Vec::with_capacity(values.len());
    // Per buffer: bytes, first, last.
    let mut buffers: Vec<(usize, usize, usize)> = Vec::new();
    let mut buffer_taken_at: Vec<Option<usize>> = Vec::new(); // step at which a value was written over it
    for k in 0..values.len() {
        let v = values[k].clone();
        let mut shared = None;
        if in_place && v.first < n && !graph.inputs.contains(&v.value) {
            let node = &graph.nodes[v.first];
            if node.outputs.first() == Some(&v.value) {
                if let Some(src) =
                    in_place_input(&node.op).and_then(|j| node.inputs.get(j).copied().flatten())
                {
                    let appears_once =
                        node.inputs.iter().flatten().filter(|&&x| x == src).count() == 1;
                    if let Some(&s) = index.get(&src) {
                        let b = group[s];
                        let ok = appears_once
                            && !is_output[src.0]
                            && values[s].last == v.first
                            && values[s].bytes == v.bytes
                            && buffers[b].2 == v.first
                            && buffer_taken_at[b] != Some(v.first);
                        if ok {
                            shared = Some((s, b));
                        }
                    }
                }
            }
        }
        match shared {
            Some((s, b)) => {
                values[k].in_place_of = Some(values[s].value);
                buffers[b].2 = v.last;
                buffer_taken_at[b] = Some(v.first);
                group.push(b);
            }
            None => {
                group.push(buffers.len());
                buffers.push((v.bytes, v.first, v.last));
                buffer_taken_at.push(None);
            }
        }
    }

    // Concat inputs written in place: a buffer whose values all end at a Concat that reads
    // its last value once becomes the slice of the Concat's output buffer (`parent`, at a byte
    // offset), which is then reserved from that buffer's first step. The producers write
    // their results where the Concat would have copied them (Inception's 11 Concats copied
    // ~1 MiB each).
    // Per buffer: (the Concat output's buffer, byte offset in it, the Concat output value).
    let mut parent: Vec<Option<(usize, usize, ValueId)>> = vec![None; buffers.len()];
    if in_place {
        for (i, node) in graph.nodes.iter().enumerate() {
            let Op::Concat { axis } = node.op else {
                continue;
            };
            let Some(&out) = node.outputs.first() else {
                continue;
            };
            let Some(&ko) = index.get(&out) else { continue };
            let Some(shape) = graph.value(out).fixed_shape() else {
                continue;
            };
            let rank = shape.len() as i64;
            let ax = if axis < 0 { axis + rank } else { axis };
            // Only when each input is one contiguous run of the output (nothing outside the
            // axis before it, e.g. batch 1 along channels).
            if ax < 0 || ax >= rank || shape[..ax as usize].iter().any(|&d| d != 1) {
                continue;
            }
            let bout = group[ko];
            let mut offset = 0usize;
            for id in node.inputs.iter().flatten() {
                let Some(&k) = index.get(id) else { break };
                let b = group[k];
                let once = node.inputs.iter().flatten().filter(|&x| x == id).count() == 1;
                let ok = once
                    && offset.is_multiple_of(ALIGN)
                    && b != bout
                    && parent[b].is_none()
                    && !is_output[id.0]
                    && !graph.inputs.contains(id)
                    && values[k].last == i
                    && buffers[b].2 == i
                    && buffers[b].0 == values[k].bytes;
                if ok {
                    // Nodes run in order, so a nested Concat's output already spans its own
                    // parts when it becomes a part here.
                    parent[b] = Some((bout, offset, out));
                    buffers[bout].1 = buffers[bout].1.min(buffers[b].1);
                }
                offset = offset.saturating_add(values[k].bytes);
            }
        }
        for (b, p) in parent.iter().enumerate() {
            if p.is_some() {
                buffers[b].0 = 0;
            }
        }
    }

    // Greedy by size: biggest buffers first, each at the lowest offset free during its range.
    let mut order: Vec<usize> = (0..buffers.len()).collect();
    order.sort_by(|&a, &b| {
        buffers[b]
            .0
            .cmp(&buffers[a].0)
            .then(buffers[a].1.cmp(&buffers[b].1))
    });
    let mut offsets = vec![0usize; buffers.len()];
    let mut placed: Vec<usize> = Vec::new();
    let mut arena_bytes = 0usize;
    for &b in &order {
        let (bytes, first, last) = buffers[b];
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&p| buffers[p].1 <= last && first <= buffers[p].2 && buffers[p].0 > 0)
            .map(|&p| (offsets[p], offsets[p] + align_up(buffers[p].0)))
            .collect();
        busy.sort_unstable();
        let mut offset = 0usize;
        for (start, end) in busy {
            if offset + bytes <= start {
                break;
            }
            offset = offset.max(end);
        }
        offsets[b] = offset;
        arena_bytes = arena_bytes.max(offset + align_up(bytes));
        placed.push(b);
    }
    // Buffers inside a Concat's output take their slice of it.
    let place = |mut b: usize| {
        let mut at = 0;
        while let Some((p, off, _)) = parent[b] {
            at += off;
            b = p;
        }
        offsets[b] + at
    };
    for (k, v) in values.iter_mut().enumerate() {
        let b = group[k];
        v.offset = place(b);
        // The first value of a buffer names the Concat output it lies in (`validate` and
        // `verify` follow it); the rest are in place of that one.
        if v.in_place_of.is_none() {
            v.part_of = parent[b].map(|(_, _, out)| out);
        }
    }

    let mut live_bytes_during = vec![0usize; n];
    let mut live_bytes_after = vec![0usize; n];
    for &(bytes, first, last) in &buffers {
        for step in first..=last.min(n.saturating_sub(1)) {
            if n == 0 {
                break;
            }
            live_bytes_during[step] += bytes;
            if step < last || (step == first && first == last) {
                live_bytes_after[step] += bytes;
            }
        }
    }
    let total_activation_bytes = values.iter().map(|v| v.bytes).sum();
    let planned_peak_bytes = live_bytes_during.iter().copied().max().unwrap_or_else(|| {
        // A graph without nodes still holds its inputs.
        buffers.iter().map(|b| b.0).sum()
    });
    Ok(MemoryPlan {
        values,
        index,
        arena_bytes,
        planned_peak_bytes,
        live_bytes_during,
        live_bytes_after,
        total_activation_bytes,
    })
}
