//! Structural checks after conversion: every graph, subgraphs included, is a DAG whose
//! inputs are all defined, in single-assignment form.
//!
//! Doing this at load time means a malformed file fails here, with the file's name, rather
//! than as a confusing error (or a hang) deep in the compiler.
//!
//! Cost stays linear in the model size times the nesting depth: each subgraph is checked
//! against only the names it captures, never against a copy of every enclosing name (which
//! a file with many small subgraphs could turn quadratic).
use kuaxin_core::error::ResultExt;
use kuaxin_core::graph::{Attr, Graph};
use kuaxin_core::{Error, Result};
use std::collections::HashSet;
use std::sync::Arc;

/// Checks the main graph of a model and, recursively, its subgraphs.
pub(crate) fn check_model_graph(g: &Graph) -> Result<()> {
    check_graph(g, &HashSet::new())
}

/// `outer`: the names of enclosing graphs that `g` reads.
fn check_graph(g: &Graph, outer: &HashSet<String>) -> Result<()> {
    // Cycles, undefined inputs (also those captured by subgraphs), duplicate producers.
    g.topo_order(outer)?;
    let mut defined: HashSet<String> = g.inputs.iter().map(|v| v.name.clone()).collect();
    defined.extend(g.initializers.iter().map(|(n, _)| n.clone()));
    for n in &g.nodes {
        if let Some(o) = n.outputs.iter().find(|o| defined.contains(o.as_str())) {
            return Err(Error::invalid(format!(
                "{}: output '{o}' redefines a graph input or initializer",
                n.describe()
            )));
        }
    }
    for n in &g.nodes {
        for (name, a) in &n.attrs {
            let subs: &[Arc<Graph>] = match a {
                Attr::Graph(sg) => std::slice::from_ref(sg),
                Attr::Graphs(sgs) => sgs,
                _ => continue,
            };
            for sg in subs {
                // topo_order above has checked that every name sg reads from outside
                // (inputs of its nodes and of nested subgraphs, and pass-through outputs)
                // exists; what is left is sg's own structure.
                let captured: HashSet<String> = sg.free_inputs().into_iter().collect();
                check_graph(sg, &captured).with_ctx(|| {
                    format!("{}: attribute '{name}': graph '{}'", n.describe(), sg.name)
                })?;
            }
        }
    }
    Ok(())
}
