// The namespace suite (suite.ts) against `--fast-path nftables`.
import { NftView } from './kernel-view.ts';
import { kernelPathSuite } from './suite.ts';

kernelPathSuite(new NftView());
