#!/usr/bin/env python3
"""Dev tool (not run by CI): per-layer float32 error of the engine and of ONNX Runtime.

Adds every Conv/Relu/Concat/pool/Gemm output of .cache/models/MODEL.onnx as a graph output, runs
both runtimes on MODEL_input.npy (1 thread), and recomputes each op in float64 with numpy from
*that runtime's own* float32 inputs, so each error is the op's local error (not accumulated).
Prints mean relative max / RMS error per op type; with OP given, one line per node of that type.
Supports what torchvision-style exports use (ungrouped Conv, pools without ceil_mode).

Usage: /work/venv/bin/python scripts/layer_errors.py inception_v3 [Conv]
Needs target/release/engine (ENGINE=path overrides).
"""
import onnx, numpy as np, onnxruntime as ort, subprocess, os, sys
from onnx import numpy_helper, helper
from numpy.lib.stride_tricks import sliding_window_view as swv
name=sys.argv[1]; c=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), '.cache', 'models') + '/'
m=onnx.load(c+name+'.onnx'); g=m.graph
inits={t.name:numpy_helper.to_array(t) for t in g.initializer}
outs=[n.output[0] for n in g.node if n.op_type in ('Conv','Relu','Concat','AveragePool','MaxPool','GlobalAveragePool','Gemm')]
existing={o.name for o in g.output}
for o in [o for o in outs if o not in existing]: g.output.append(helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None))
onnx.save(m,'/tmp/bis.onnx')
x=np.load(c+name+'_input.npy')
so=ort.SessionOptions(); so.intra_op_num_threads=1
s=ort.InferenceSession('/tmp/bis.onnx',so,providers=['CPUExecutionProvider'])
names=[o.name for o in s.get_outputs()]
O=dict(zip(names,s.run(None,{'input':x})))
os.system('rm -rf /tmp/biso; mkdir -p /tmp/biso')
p=subprocess.run([os.environ.get('ENGINE', os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'target/release/engine')),'run','/tmp/bis.onnx','--input',c+name+'_input.npy','--output-dir','/tmp/biso','-t','1'],capture_output=True,text=True)
if p.returncode: print(p.stderr[-800:]); sys.exit(1)
def san(n): return ''.join(ch if ch.isalnum() or ch in '._-' else '_' for ch in n)
E={}
for n in names:
    f='/tmp/biso/'+san(n)+'.npy'
    if os.path.exists(f): E[n]=np.load(f)
print('engine outputs', len(E), 'of', len(names))
def attr(n):
    return {a.name: helper.get_attribute_value(a) for a in n.attribute}
def conv(X,W,B,a):
    X=X.astype(np.float64); W=W.astype(np.float64)
    pads=a.get('pads',[0,0,0,0]); st=a.get('strides',[1,1]); gr=a.get('group',1); dil=a.get('dilations',[1,1])
    assert gr==1 and dil==[1,1]
    Xp=np.pad(X,((0,0),(0,0),(pads[0],pads[2]),(pads[1],pads[3])))
    kh,kw=W.shape[2:]
    win=swv(Xp,(kh,kw),axis=(2,3))[:,:,::st[0],::st[1]]  # N C OH OW kh kw
    y=np.einsum('nchwij,ocij->nohw',win,W,optimize=True)
    if B is not None: y+=B.astype(np.float64)[None,:,None,None]
    return y
def pool(X,a,kind):
    X=X.astype(np.float64); k=a['kernel_shape']; st=a.get('strides',[1,1]); pads=a.get('pads',[0,0,0,0])
    assert not a.get('ceil_mode',0)
    fill=-np.inf if kind=='max' else 0.0
    Xp=np.pad(X,((0,0),(0,0),(pads[0],pads[2]),(pads[1],pads[3])),constant_values=fill)
    win=swv(Xp,tuple(k),axis=(2,3))[:,:,::st[0],::st[1]]
    if kind=='max': return win.max(axis=(4,5))
    if a.get('count_include_pad',0): return win.mean(axis=(4,5))
    ones=np.pad(np.ones(X.shape[2:]),((pads[0],pads[2]),(pads[1],pads[3])))
    cnt=swv(ones,tuple(k))[::st[0],::st[1]].sum(axis=(2,3))
    return win.sum(axis=(4,5))/cnt
def ev(n,get):
    a=attr(n); i=[get(t) if t not in inits else inits[t] for t in n.input]
    t=n.op_type
    if t=='Conv': return conv(i[0],i[1],i[2] if len(i)>2 else None,a)
    if t=='Relu': return np.maximum(i[0].astype(np.float64),0)
    if t=='Concat': return np.concatenate([v.astype(np.float64) for v in i],axis=a['axis'])
    if t=='MaxPool': return pool(i[0],a,'max')
    if t=='AveragePool': return pool(i[0],a,'avg')
    if t=='GlobalAveragePool': return i[0].astype(np.float64).mean(axis=(2,3),keepdims=True)
    if t=='Gemm':
        A=i[0].astype(np.float64); B=i[1].astype(np.float64)
        if a.get('transB',0): B=B.T
        return A@B+i[2].astype(np.float64)
    return None
from collections import defaultdict
acc={'ort':defaultdict(list),'eng':defaultdict(list)}
for n in g.node:
    if n.output[0] not in O: continue
    for tag,D in (('ort',O),('eng',E)):
        def get(t): 
            if t=='input': return x
            return D[t] if t in D else None
        if any(get(t) is None and t not in inits for t in n.input): continue
        r=ev(n,get)
        if r is None or n.output[0] not in D: continue
        out=D[n.output[0]].astype(np.float64)
        err=np.abs(out-r).max()/max(1e-30,np.abs(r).max())
        acc[tag][n.op_type].append((err,n.name, np.sqrt(((out-r)**2).mean())/max(1e-30,np.sqrt((r**2).mean()))))
for op in acc['ort']:
    o=acc['ort'][op]; e=acc['eng'].get(op,[])
    print(f"{op:18} n={len(o):3} ORT mean rel-max {np.mean([v[0] for v in o]):.2e} rel-rms {np.mean([v[2] for v in o]):.2e} | ENG n={len(e)} mean rel-max {np.mean([v[0] for v in e]) if e else 0:.2e} rel-rms {np.mean([v[2] for v in e]) if e else 0:.2e}")
if len(sys.argv)>2:
  op=sys.argv[2]
  for (eo,no,ro),(ee,ne,re_) in zip(acc['ort'][op],acc['eng'][op]):
    print(f"{no:50} ort {ro:.2e} eng {re_:.2e} ratio {re_/max(ro,1e-30):.2f}")
