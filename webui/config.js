// Deployment settings of the web UI, read before the app starts. Served by the local host
// (or any Functions host) the API is on the same origin: leave FLEET_API_BASE empty. For a
// separately deployed static site (Azure Static Web Apps, a storage static website), set it
// to the Function App's origin, e.g. "https://fleet-func.azurewebsites.net" (the app adds
// "/api"), and allow that site's origin in the Function App's CORS settings.
window.FLEET_API_BASE = window.FLEET_API_BASE || "";
