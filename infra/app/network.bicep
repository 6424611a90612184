// Private networking, deployed only with publicNetworkAccess=Disabled (main.bicep): a virtual
// network with a subnet the Function App joins (Flex Consumption virtual network integration:
// the subnet is delegated to Microsoft.App/environments) and a subnet for the private endpoints
// of Blob, Table and Queue Storage, Cosmos DB and Key Vault. Each endpoint registers in its
// private DNS zone, linked to the network, so the app resolves the services' usual names to
// private addresses and its settings stay the same as without a network.
param location string
param tags object
param name string
@description('Private endpoints are named <prefix>-<service>.')
param endpointNamePrefix string
@description('{addressPrefix, appSubnetPrefix, privateEndpointSubnetPrefix}: the network and its two subnets.')
param addressSpace object
param storageAccountName string
param cosmosAccountName string
param keyVaultName string

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource cosmos 'Microsoft.DocumentDB/databaseAccounts@2024-11-15' existing = {
  name: cosmosAccountName
}

resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

// One private endpoint per service the app reaches (queue: the timers' fan-out to fleet-passes
// and the host's queue triggers). Cosmos DB and Key Vault zones are the Azure public cloud's.
var endpoints = [
  {
    name: 'blob'
    service: storage.id
    groupId: 'blob'
    zone: 'privatelink.blob.${environment().suffixes.storage}'
  }
  {
    name: 'table'
    service: storage.id
    groupId: 'table'
    zone: 'privatelink.table.${environment().suffixes.storage}'
  }
  {
    name: 'queue'
    service: storage.id
    groupId: 'queue'
    zone: 'privatelink.queue.${environment().suffixes.storage}'
  }
  {
    name: 'cosmos'
    service: cosmos.id
    groupId: 'Sql'
    zone: 'privatelink.documents.azure.com'
  }
  {
    name: 'vault'
    service: keyVault.id
    groupId: 'vault'
    zone: 'privatelink.vaultcore.azure.net'
  }
]

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        addressSpace.addressPrefix
      ]
    }
    subnets: [
      {
        name: 'app'
        properties: {
          addressPrefix: addressSpace.appSubnetPrefix
          delegations: [
            {
              name: 'flex-consumption'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
        }
      }
      {
        name: 'private-endpoints'
        properties: {
          addressPrefix: addressSpace.privateEndpointSubnetPrefix
          privateEndpointNetworkPolicies: 'Disabled'
        }
      }
    ]
  }
}

resource zones 'Microsoft.Network/privateDnsZones@2020-06-01' = [
  for endpoint in endpoints: {
    name: endpoint.zone
    location: 'global'
    tags: tags
  }
]

resource zoneLinks 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2020-06-01' = [
  for (endpoint, i) in endpoints: {
    parent: zones[i]
    name: vnet.name
    location: 'global'
    tags: tags
    properties: {
      registrationEnabled: false
      virtualNetwork: {
        id: vnet.id
      }
    }
  }
]

resource privateEndpoints 'Microsoft.Network/privateEndpoints@2024-05-01' = [
  for (endpoint, i) in endpoints: {
    name: '${endpointNamePrefix}-${endpoint.name}'
    location: location
    tags: tags
    properties: {
      subnet: {
        id: vnet.properties.subnets[1].id
      }
      privateLinkServiceConnections: [
        {
          name: endpoint.name
          properties: {
            privateLinkServiceId: endpoint.service
            groupIds: [
              endpoint.groupId
            ]
          }
        }
      ]
    }
  }
]

resource zoneGroups 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = [
  for (endpoint, i) in endpoints: {
    parent: privateEndpoints[i]
    name: 'default'
    properties: {
      privateDnsZoneConfigs: [
        {
          name: endpoint.name
          properties: {
            privateDnsZoneId: zones[i].id
          }
        }
      ]
    }
  }
]

output appSubnetId string = vnet.properties.subnets[0].id
