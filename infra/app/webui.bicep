// The static control plane (webui/). It calls the API cross-origin: the deployed copy of
// index.html sets window.FLEET_API_BASE to the Function App's URL (scripts/deploy/webui.py,
// run by azd before it uploads the site), and the Function App allows this origin (CORS).
param location string
param tags object
param name string

resource staticWebApp 'Microsoft.Web/staticSites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': 'webui'
  })
  sku: {
    name: 'Free'
    tier: 'Free'
  }
  properties: {
    allowConfigFileUpdates: true
    stagingEnvironmentPolicy: 'Disabled'
    buildProperties: {
      skipGithubActionWorkflowGeneration: true
    }
  }
}

output name string = staticWebApp.name
output url string = 'https://${staticWebApp.properties.defaultHostname}'
