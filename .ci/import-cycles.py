"""Checks the layout of fkd's crates: no two source files import each other, directly or
through others, and no source file outside tests passes MAX_LINES lines. A file imports
another when it names an item through that file's module path (`crate::a::b`, `super::x`, a
child module's name in a `use`); an item a module re-exports counts as its defining module's;
`mod x;` declarations are not imports. Usage: import-cycles.py CRATE_SRC_DIR... (exit 1 on a
finding)."""
import os,re,sys
def modpath(root, f):
    rel=os.path.relpath(f, root)[:-3].split(os.sep)
    if rel[-1] in ('lib','main','mod'): rel=rel[:-1]
    return tuple(rel)
def crate_graph(root):
    files={}
    for d,_,fs in os.walk(root):
        for x in fs:
            if x.endswith('.rs'): files[modpath(root,os.path.join(d,x))]=os.path.join(d,x)
    # items a module re-exports from its children: (module, name) -> child module
    reexp={}
    for m,f in files.items():
        src=re.sub(r'//[^\n]*','',open(f).read())
        for mm in re.finditer(r'pub use ([a-z_][a-z0-9_]*)::(\{[^}]*\}|[A-Za-z_][A-Za-z0-9_]*)', src):
            names=mm.group(2).strip('{}').replace('\n',' ').split(',')
            for n in names:
                n=n.strip().split(' as ')[-1].strip()
                if n and (m+(mm.group(1),)) in files: reexp[(m,n)]=m+(mm.group(1),)
    edges={}
    for m,f in files.items():
        s=open(f).read()
        s=re.sub(r'//[^\n]*','',s)
        out=set()
        def resolve(parts):
            # longest prefix that is a file module; an item it re-exports goes to its source
            for k in range(len(parts),-1,-1):
                if tuple(parts[:k]) in files:
                    mod=tuple(parts[:k])
                    if k<len(parts) and (mod,parts[k]) in reexp: return reexp[(mod,parts[k])]
                    return mod
            return ()
        for mm in re.finditer(r'\bcrate::((?:[a-z_][a-z0-9_]*::)*[A-Za-z_][A-Za-z0-9_]*)', s):
            out.add(resolve(mm.group(1).split('::')))
        for mm in re.finditer(r'\b((?:super::)+)((?:[a-z_][a-z0-9_]*::)*[A-Za-z_][A-Za-z0-9_]*)', s):
            ups=mm.group(1).count('super::')
            # inline `mod tests` blocks use super:: for their own file
            base=list(m)
            is_dir_mod=os.path.basename(f) in ('lib.rs','mod.rs','main.rs')
            parent=base[:len(base)-ups] if not is_dir_mod else base[:len(base)-ups]
            tgt=resolve(parent+mm.group(2).split('::'))
            out.add(tgt)
        for mm in re.finditer(r'^\s*(?:pub(?:\([^)]*\))?\s+)?use\s+([a-z_][a-z0-9_]*)::', s, re.M):
            if mm.group(0).lstrip().startswith('pub use'): continue
            name=mm.group(1)
            if (m+(name,)) in files: out.add(m+(name,))
        # a `mod x;` child and `use super::*` in inline tests are not edges
        out.discard(m)
        edges[m]={e for e in out if e in files}
    return files,edges
def sccs(edges):
    idx={};low={};st=[];on=set();res=[];i=[0]
    sys.setrecursionlimit(10000)
    def go(v):
        idx[v]=low[v]=i[0];i[0]+=1;st.append(v);on.add(v)
        for w in edges.get(v,()):
            if w not in idx: go(w);low[v]=min(low[v],low[w])
            elif w in on: low[v]=min(low[v],idx[w])
        if low[v]==idx[v]:
            c=[]
            while True:
                w=st.pop();on.discard(w);c.append(w)
                if w==v: break
            if len(c)>1: res.append(c)
    for v in edges:
        if v not in idx: go(v)
    return res
bad=0
for root in sys.argv[1:]:
    files,edges=crate_graph(root)
    for c in sccs(edges):
        bad+=1
        print(root, 'cycle:', ' <-> '.join('::'.join(x) or 'lib' for x in c))
        for a in c:
            print('   ', '::'.join(a) or 'lib', '->', ['::'.join(b) or 'lib' for b in edges[a] if b in c])
MAX_LINES = 1000
for root in sys.argv[1:]:
    for d,_,fs in os.walk(root):
        for x in fs:
            if not x.endswith('.rs'):
                continue
            f=os.path.join(d,x)
            n=0
            for line in open(f):
                if line.startswith('#[cfg(test)]'):
                    break
                n+=1
            if n>MAX_LINES:
                bad+=1
                print(f'{f}: {n} lines before its tests (at most {MAX_LINES})')
print(f'import cycles and long files: {bad}')
sys.exit(1 if bad else 0)
