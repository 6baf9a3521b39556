//! The layering of `shared`: its top-level modules must not import each other in a cycle,
//! so that each can be read (and replaced, like the storage backend) from the bottom up.
//! `model` imports nothing of the crate, the other leaves nothing but `model`, and `db`
//! (the queries) nothing of the features built on it; and no code outside `shared::storage`
//! opens a file or learns the storage root, so that another backend fits behind it. Read
//! from the sources: files up to their first `#[cfg(test)]` (test code may reach
//! anywhere), comments left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules that may import `model` and nothing else of the crate.
const LEAVES: &[&str] = &["fields", "imaging", "schedule", "shutdown", "telemetry"];

/// What `db` may import: the model and the primitives the rows are made of, never a feature
/// module (the features call `db`, and own the events a row change queues).
const DB_IMPORTS: &[&str] = &["config", "events", "model", "storage"];

fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The files of top-level module `name`: `name.rs` and everything under `name/`.
fn files_of(name: &str) -> Vec<PathBuf> {
    let mut files = vec![source_dir().join(format!("{name}.rs"))];
    let folder = source_dir().join(name);
    if folder.is_dir() {
        files.extend(rust_files(&folder));
    }
    files
}

/// Which top-level modules each top-level module names as `crate::…`.
fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<String> = std::fs::read_dir(source_dir())
        .unwrap()
        .filter_map(|entry| entry.unwrap().file_name().into_string().ok())
        .filter_map(|name| name.strip_suffix(".rs").map(str::to_owned))
        .filter(|name| name != "lib" && name != "test_support")
        .collect();
    let mut graph = BTreeMap::new();
    for module in &modules {
        let mut imports = BTreeSet::new();
        for file in files_of(module) {
            let text = std::fs::read_to_string(&file).unwrap();
            for line in text.lines().map(str::trim).take_while(|line| !line.starts_with("#[cfg(test)]")) {
                if line.starts_with("//") {
                    continue;
                }
                for (at, _) in line.match_indices("crate::") {
                    let rest = &line[at + "crate::".len()..];
                    let name: String = rest.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                    if &name != module && modules.contains(&name) {
                        imports.insert(name);
                    }
                }
            }
        }
        graph.insert(module.clone(), imports);
    }
    graph
}

/// The modules on some cycle, grouped by strongly connected component (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<BTreeSet<String>> {
    struct State<'g> {
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        found: BTreeSet<BTreeSet<String>>,
    }
    fn visit<'g>(state: &mut State<'g>, node: &'g str) {
        let next = state.index.len();
        state.index.insert(node, next);
        state.low.insert(node, next);
        state.stack.push(node);
        for target in &state.graph[node] {
            let target = target.as_str();
            if !state.index.contains_key(target) {
                visit(state, target);
                let low = state.low[node].min(state.low[target]);
                state.low.insert(node, low);
            } else if state.stack.contains(&target) {
                let low = state.low[node].min(state.index[target]);
                state.low.insert(node, low);
            }
        }
        if state.low[node] == state.index[node] {
            let mut component = BTreeSet::new();
            while let Some(member) = state.stack.pop() {
                component.insert(member.to_owned());
                if member == node {
                    break;
                }
            }
            if component.len() > 1 {
                state.found.insert(component);
            }
        }
    }
    let mut state =
        State { graph, index: BTreeMap::new(), low: BTreeMap::new(), stack: Vec::new(), found: BTreeSet::new() };
    for node in graph.keys() {
        if !state.index.contains_key(node.as_str()) {
            visit(&mut state, node);
        }
    }
    state.found
}

#[test]
fn the_top_level_modules_import_each_other_without_cycles() {
    let graph = import_graph();
    assert!(graph.contains_key("db") && graph["db"].contains("model"), "the graph was read: {graph:?}");
    assert_eq!(cycles(&graph), BTreeSet::new(), "imports: {graph:#?}");
}

#[test]
fn the_model_imports_nothing_and_the_leaves_only_the_model() {
    let graph = import_graph();
    assert_eq!(graph["model"], BTreeSet::new());
    let model = BTreeSet::from(["model".to_owned()]);
    for leaf in LEAVES {
        assert!(graph[*leaf].is_subset(&model), "{leaf} imports {:?}", graph[*leaf]);
    }
}

#[test]
fn the_encryption_core_imports_only_the_model_and_the_configuration() {
    let graph = import_graph();
    let allowed = BTreeSet::from(["config".to_owned(), "model".to_owned()]);
    assert!(graph["crypto"].is_subset(&allowed), "crypto imports {:?}", graph["crypto"]);
}

#[test]
fn the_queries_import_no_feature_module() {
    let graph = import_graph();
    let allowed: BTreeSet<String> = DB_IMPORTS.iter().map(|m| m.to_string()).collect();
    let beyond: Vec<&String> = graph["db"].difference(&allowed).collect();
    assert!(beyond.is_empty(), "db imports {beyond:?}");
}

#[test]
fn a_cycle_is_found_when_there_is_one() {
    let graph: BTreeMap<String, BTreeSet<String>> = [("a", &["b"][..]), ("b", &["c"]), ("c", &["a"]), ("d", &["a"])]
        .into_iter()
        .map(|(node, targets)| (node.to_owned(), targets.iter().map(|t| t.to_string()).collect()))
        .collect();
    let expected: BTreeSet<String> = ["a", "b", "c"].into_iter().map(str::to_owned).collect();
    assert_eq!(cycles(&graph), BTreeSet::from([expected]));
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files
}

#[test]
fn files_are_reached_only_through_the_storage_interface() {
    // What would tie a caller to the local backend: opening files itself, or the root path.
    const LOCAL_ONLY: [&str; 4] = ["std::fs", "tokio::fs", "fs::File", ".root()"];
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let storage = source_dir().join("storage");
    let (mut offences, mut scanned) = (Vec::new(), 0);
    for krate in ["shared", "api", "worker", "scheduler"] {
        for file in rust_files(&workspace.join(krate).join("src")) {
            let name = file.file_name().unwrap();
            // The configuration reads its own files (a mounted secret), which are no stored objects.
            let configuration = file.starts_with(source_dir().join("config")) || file == source_dir().join("config.rs");
            let test_support = name == "test_support.rs" || file.starts_with(source_dir().join("test_support"));
            if file.starts_with(&storage) || name == "storage.rs" || test_support || configuration {
                continue;
            }
            scanned += 1;
            let text = std::fs::read_to_string(&file).unwrap();
            let code = text.lines().map(str::trim).take_while(|line| !line.starts_with("#[cfg(test)]"));
            for (number, line) in code.enumerate().filter(|(_, line)| !line.starts_with("//")) {
                if let Some(needle) = LOCAL_ONLY.iter().find(|needle| line.contains(*needle)) {
                    offences.push(format!("{}:{}: {needle}", file.display(), number + 1));
                }
            }
        }
    }
    assert!(scanned > 50, "the sources were read: {scanned} files");
    assert!(offences.is_empty(), "files opened outside shared::storage: {offences:#?}");
}
