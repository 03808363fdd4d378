//! JMESPath expressions as the config holds them: compiled once, bounded in
//! size and depth, and checked for bare `true`/`false`/`null` that read as
//! field names.

/// A compiled JMESPath expression with its source text.
pub struct Expr {
    /// The expression as written in the file.
    pub source: String,
    /// The compiled form.
    pub compiled: jmespath::Expression<'static>,
}

impl std::fmt::Debug for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}`", self.source)
    }
}

/// Converts JSON into the document form expressions search.
pub fn doc(value: serde_json::Value) -> jmespath::Rcvar {
    use jmespath::ToJmespath;
    value
        .to_jmespath()
        .unwrap_or_else(|_| jmespath::Rcvar::new(jmespath::Variable::Null))
}

/// Most operators and brackets in one expression. The JMESPath parser, and
/// dropping what it built, recurse about once for each; this keeps both
/// within the 2 MiB stack of any heal thread, whatever a pause's `match` or a
/// config file holds.
const MAX_EXPR_OPERATORS: usize = 256;

/// Deepest nesting of a parsed expression: the interpreter recurses once per
/// level each time the expression is evaluated.
const MAX_EXPR_DEPTH: usize = 32;

impl Expr {
    /// Compiles `source`; the error is JMESPath's own message, or says the
    /// expression is too big to evaluate safely.
    pub fn compile(source: &str) -> std::result::Result<Expr, String> {
        let operators = count_operators(source);
        if operators > MAX_EXPR_OPERATORS {
            return Err(format!("{operators} operators and brackets, more than the {MAX_EXPR_OPERATORS} heal evaluates safely (write a simpler expression)"));
        }
        let compiled = jmespath::compile(source).map_err(|e| e.to_string().replace('\n', " "))?;
        let depth = depth(compiled.as_ast());
        if depth > MAX_EXPR_DEPTH {
            return Err(format!("nested {depth} levels deep, more than the {MAX_EXPR_DEPTH} heal evaluates safely (write a flatter expression)"));
        }
        Ok(Expr {
            source: source.to_string(),
            compiled,
        })
    }

    /// Evaluates over a document and returns the result as JSON.
    pub fn eval(&self, doc: &jmespath::Rcvar) -> std::result::Result<serde_json::Value, String> {
        let var = self
            .compiled
            .search(doc.clone())
            .map_err(|e| format!("`{}`: {}", self.source, e.to_string().replace('\n', " ")))?;
        serde_json::to_value(&*var).map_err(|e| format!("`{}`: {e}", self.source))
    }

    /// Evaluates and applies JMESPath truthiness (false, null, "", [] and {} are false).
    pub fn truthy(&self, doc: &jmespath::Rcvar) -> std::result::Result<bool, String> {
        let var = self
            .compiled
            .search(doc.clone())
            .map_err(|e| format!("`{}`: {}", self.source, e.to_string().replace('\n', " ")))?;
        Ok(var.is_truthy())
    }
}

/// Operator and bracket characters outside quoted strings and literals.
fn count_operators(source: &str) -> usize {
    let mut count = 0;
    let mut quote = None;
    let mut chars = source.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(_), '\\') => {
                chars.next();
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"' | '`') => quote = Some(c),
            (None, c) if "()[]{}!&|.=<>*?".contains(c) => count += 1,
            (None, _) => {}
        }
    }
    count
}

/// The sub-expressions of a parsed expression's node.
fn children(node: &jmespath::ast::Ast) -> Vec<&jmespath::ast::Ast> {
    use jmespath::ast::Ast;
    match node {
        Ast::Comparison { lhs, rhs, .. }
        | Ast::And { lhs, rhs, .. }
        | Ast::Or { lhs, rhs, .. }
        | Ast::Projection { lhs, rhs, .. }
        | Ast::Subexpr { lhs, rhs, .. } => vec![lhs, rhs],
        Ast::Condition {
            predicate, then, ..
        } => vec![predicate, then],
        Ast::Expref { ast, .. } => vec![ast],
        Ast::Flatten { node, .. } | Ast::Not { node, .. } | Ast::ObjectValues { node, .. } => {
            vec![node]
        }
        Ast::Function { args, .. } => args.iter().collect(),
        Ast::MultiList { elements, .. } => elements.iter().collect(),
        Ast::MultiHash { elements, .. } => elements.iter().map(|kv| &kv.value).collect(),
        Ast::Identity { .. }
        | Ast::Field { .. }
        | Ast::Index { .. }
        | Ast::Literal { .. }
        | Ast::Slice { .. } => Vec::new(),
    }
}

/// How deep a parsed expression nests, walked without recursion.
fn depth(ast: &jmespath::ast::Ast) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(ast, 1)];
    while let Some((node, level)) = stack.pop() {
        deepest = deepest.max(level);
        stack.extend(children(node).into_iter().map(|child| (child, level + 1)));
    }
    deepest
}

/// The bare `true`, `false` or `null` of an expression, walked without
/// recursion: JMESPath reads each as a lookup of a field of that name (null
/// in any alert), not as the literal (`` `true` ``). A field of an object
/// (`labels.true`) is a name, and is left alone.
pub(super) fn literal_lookalikes(ast: &jmespath::ast::Ast) -> Vec<&str> {
    use jmespath::ast::Ast;
    let mut found = Vec::new();
    let mut stack = vec![(ast, false)];
    while let Some((node, of_object)) = stack.pop() {
        match node {
            Ast::Field { name, .. }
                if !of_object && matches!(name.as_str(), "true" | "false" | "null") =>
            {
                if !found.contains(&name.as_str()) {
                    found.push(name.as_str());
                }
            }
            Ast::Subexpr { lhs, rhs, .. } | Ast::Projection { lhs, rhs, .. } => {
                stack.push((rhs, true));
                stack.push((lhs, of_object));
            }
            // In reverse, so that they are found in the order written.
            _ => stack.extend(children(node).into_iter().rev().map(|child| (child, false))),
        }
    }
    found
}
