// Cosmos DB for NoSQL: one database, one container partitioned by product (DESIGN.md "Data").
// Entra ID only (disableLocalAuth): the app reaches it with COSMOS__accountEndpoint and its
// managed identity. Data-plane RBAC cannot create databases or containers, so they are created
// here; the app's own create-if-missing (fleet/store/azure.py ensure_cosmos) then only reads them.
param location string
param tags object
param name string
param databaseName string
param containerName string
param partitionKeyPath string
@description('-1: TTL on, per item (spilled events carry their own ttl).')
param defaultTtl int
param indexingPolicy object
@allowed([
  'serverless'
  'provisioned'
])
param capacityMode string
param autoscaleMaxThroughput int
@allowed([
  'Enabled'
  'Disabled'
])
@description('Disabled: reachable only through the private endpoint of app/network.bicep.')
param publicNetworkAccess string

var serverless = capacityMode == 'serverless'
var serverlessCapabilities = [
  {
    name: 'EnableServerless'
  }
]
var autoscaleOptions = {
  autoscaleSettings: {
    maxThroughput: autoscaleMaxThroughput
  }
}

resource account 'Microsoft.DocumentDB/databaseAccounts@2024-11-15' = {
  //checkov:skip=CKV_AZURE_99: no IP or virtual-network filter: by default the Function App (no virtual network) reaches the account over its public endpoint, with Entra ID only (disableLocalAuth) through data-plane RBAC; with publicNetworkAccess=Disabled only the private endpoint answers
  //checkov:skip=CKV_AZURE_101: public network access follows the publicNetworkAccess parameter: Enabled by default (no virtual network; access is Entra ID only, disableLocalAuth), Disabled: private endpoint only (app/network.bicep)
  name: name
  location: location
  tags: tags
  kind: 'GlobalDocumentDB'
  properties: {
    databaseAccountOfferType: 'Standard'
    consistencyPolicy: {
      defaultConsistencyLevel: 'Session'
    }
    locations: [
      {
        locationName: location
        failoverPriority: 0
        isZoneRedundant: false
      }
    ]
    capabilities: serverless ? serverlessCapabilities : []
    disableLocalAuth: true
    disableKeyBasedMetadataWriteAccess: true
    minimalTlsVersion: 'Tls12'
    publicNetworkAccess: publicNetworkAccess
  }
}

resource database 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases@2024-11-15' = {
  parent: account
  name: databaseName
  properties: {
    resource: {
      id: databaseName
    }
  }
}

resource container 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-11-15' = {
  parent: database
  name: containerName
  properties: {
    resource: {
      id: containerName
      partitionKey: {
        paths: [
          partitionKeyPath
        ]
        kind: 'Hash'
        version: 2
      }
      indexingPolicy: indexingPolicy
      defaultTtl: defaultTtl
    }
    options: serverless ? {} : autoscaleOptions
  }
}

output name string = account.name
output endpoint string = account.properties.documentEndpoint
