// Which hosts are up: the one rule lives in services/common/heartbeat-feed.ts (the scheduler and
// the status service share it). Kept only so the scheduler's imports hold until it uses the feed.
export { HostLiveness } from '../common/heartbeat-feed.js';
