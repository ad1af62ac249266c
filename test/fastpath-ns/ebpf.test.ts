// The namespace suite (suite.ts) against `--fast-path ebpf` (needs the object: npm run build:bpf).
import { EbpfView } from './kernel-view.ts';
import { kernelPathSuite } from './suite.ts';

kernelPathSuite(new EbpfView());
