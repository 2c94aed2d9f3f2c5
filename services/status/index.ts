// The status service's public face.
export { StatusService, type StatusOptions } from './status-service.js';
export { ClusterView } from './cluster-view.js';
