// Key Vault for the app's secret settings (the tracker bridge's and the alert webhook's secrets
// and URLs): the Function App's settings are Key Vault references (app/api.bicep) that the
// platform resolves with the app's identity (Key Vault Secrets User, app/rbac.bicep). Access is
// Azure RBAC only: no access policies, so no one reads a secret without a role assignment.
param location string
param tags object
param name string
@secure()
@description('App setting name -> value. Each is stored as the secret named after the setting (ALERT_WEBHOOK_URL: alert-webhook-url); an empty value is not stored (that feature is off).')
param secrets object
@allowed([
  'Enabled'
  'Disabled'
])
@description('Disabled: reachable only through its private endpoint (app/network.bicep).')
param publicNetworkAccess string

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  //checkov:skip=CKV_AZURE_109: with publicNetworkAccess=Enabled (the default) the firewall allows all networks, because the Function App then has no virtual network to be allowed from; every read needs the app's Entra ID identity and its role. publicNetworkAccess=Disabled denies all but the private endpoint
  //checkov:skip=CKV_AZURE_189: public network access follows the publicNetworkAccess parameter (Disabled: private endpoint only, app/network.bicep); Enabled by default, like Cosmos DB and Storage, for a deployment without a virtual network
  //checkov:skip=CKV_AZURE_110: no purge protection: the vault holds only copies of deployment parameters (every deployment writes them again), so nothing is lost with it, and purge protection would keep the name (derived from the environment) from being reused for 7 days after `azd down`; soft delete still keeps a deleted vault for 7 days
  //checkov:skip=CKV_AZURE_42: recoverable through soft delete (7 days); purge protection is off for the reason above
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: publicNetworkAccess
    networkAcls: {
      defaultAction: publicNetworkAccess == 'Enabled' ? 'Allow' : 'Deny'
      bypass: 'None'
    }
  }
}

resource secret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = [
  for entry in items(secrets): if (!empty(entry.value)) {
    //checkov:skip=CKV_AZURE_41: no expiry date: these are webhook and tracker secrets that the receiving systems hold too and rotate on their own schedule; an expired secret would silently switch a feature off. A redeployment with new values rotates them
    parent: vault
    name: replace(toLower(entry.key), '_', '-')
    properties: {
      value: entry.value
      contentType: 'text/plain'
      attributes: {
        enabled: true
      }
    }
  }
]

output name string = vault.name
output uri string = vault.properties.vaultUri
